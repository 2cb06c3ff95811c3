from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project itself as an app, for its start-up checks (secrets, proxies, rates)."""

    name = "project"
    verbose_name = "Project"

    def ready(self) -> None:
        from project import checks  # noqa: F401  (registers the system checks)
