"""kie.ai's failures, one type per class of failure, and the envelope codes that raise them."""

from __future__ import annotations


class KieError(Exception):
    """Base class: a call to kie.ai did not give a usable answer."""

    def __init__(self, message: str, *, code: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason  # kie.ai's own words (`msg`), when it gave any


class KieAuthError(KieError):
    """401: the API key is missing or wrong (an owner problem, not a user one)."""


class KieInsufficientCredits(KieError):
    """402 (or 433, a sub-key's cap): the account cannot pay for more images."""


class KieValidationError(KieError):
    """422 / 404: kie.ai rejected the request itself (prompt, options or model)."""


class KieRateLimited(KieError):
    """429: too many requests; nothing was created."""


class KieMaintenance(KieError):
    """455: the service is under maintenance; nothing was created."""


class KieServerError(KieError):
    """500 / 5xx: the server failed."""


class KieGenerationRejected(KieError):
    """501: the generation failed at submission."""


class KieFeatureDisabled(KieError):
    """505: the feature is currently switched off."""


class KieConnectionError(KieError):
    """The network failed before an answer arrived."""


class KieTimeout(KieError):
    """No answer in time."""


class KieMalformedResponse(KieError):
    """The answer was not the documented envelope."""


class KieSubmitUncertain(KieError):
    """createTask may or may not have reached kie.ai: it must not be sent again."""


class DownloadError(KieError):
    """The finished image could not be fetched."""


ERRORS_BY_CODE: dict[int, type[KieError]] = {
    401: KieAuthError,
    402: KieInsufficientCredits,
    404: KieValidationError,
    422: KieValidationError,
    429: KieRateLimited,
    433: KieInsufficientCredits,
    455: KieMaintenance,
    500: KieServerError,
    501: KieGenerationRejected,
    505: KieFeatureDisabled,
}

# Rejections after which kie.ai created nothing, so sending the same request again is safe.
RETRYABLE = (KieRateLimited, KieMaintenance)
