from project.exceptions import ServiceError


class WrongPassword(ServiceError):
    status_code = 400
    code = "wrong_password"
    default_message = "current_password: this is not your current password."
