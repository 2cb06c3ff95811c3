"""The one signal receiver in billing: a saved or deleted user updates their keys' cached entries.

STYLE.md keeps domain logic out of signals, and key changes do go through explicit calls in
`billing.services.api_keys`. Users are the exception: they are changed by Django's own UserAdmin
(deactivation above all), `createsuperuser`, `changepassword` and any code holding a user, none
of which goes through a service of ours. A cached key entry carries its user, so without this a
deactivated user's keys would keep working for up to API_KEY_CACHE_SECONDS in every worker.
"""

from typing import Any

from django.conf import settings
from django.db.models.signals import post_save, pre_delete
from django.dispatch import receiver

from billing.services.api_keys import api_key_cache_drop, api_key_cache_refresh


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="billing.user_saved")
def user_saved(sender: type, instance: Any, created: bool, **kwargs: Any) -> None:
    if not created:  # a new user has no keys yet
        api_key_cache_refresh(user=instance)


@receiver(pre_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="billing.user_deleted")
def user_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    # Before the delete: afterwards the keys (deleted with the user) no longer name the digests.
    api_key_cache_drop(user=instance)
