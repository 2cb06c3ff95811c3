"""The admin's login, throttled like POST /api/token/; the admin's own view does the rest."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from rest_framework.exceptions import Throttled

from accounts.throttles import ADMIN_SIGN_INS, SIGN_IN_FAILURES, username_ident
from project.throttling import address_ident


@never_cache
def admin_login(request: HttpRequest) -> HttpResponse:
    """Log in to the admin: attempts are limited per client address, failures per username
    (counted with POST /api/token/'s). A refused attempt is a 429 saying when to try again."""
    if request.method != "POST":
        return admin.site.login(request)
    username = username_ident(request.POST.get("username"))
    try:
        ADMIN_SIGN_INS.take(address_ident(request))
        if username:
            SIGN_IN_FAILURES.check(username)
    except Throttled as refused:
        return _too_many(refused)
    response = admin.site.login(request)
    if username and response.status_code != 302:  # the form again, not the redirect: it failed
        SIGN_IN_FAILURES.hit(username)
    return response


def _too_many(refused: Throttled) -> HttpResponse:
    response = HttpResponse(
        str(refused.detail), status=429, content_type="text/plain; charset=utf-8"
    )
    response["Retry-After"] = str(refused.wait)
    return response
