"""Models of the project package: the OpenID Connect identities of users."""

from django.conf import settings
from django.db import models


class OidcIdentity(models.Model):
    """The identity-provider subject (issuer and ``sub``) a Django user signs in as; users are found by it."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identity")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "OpenID Connect identity"
        verbose_name_plural = "OpenID Connect identities"
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="unique_oidc_subject")]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"
