"""Hub access: whether the Hugging Face Hub answers from this machine, asked the way a download asks.

The embedded models and data (:mod:`helpers.assets`) need no network; a Hub id
does. Before a Hub load, :mod:`helpers.models.loading` and
:mod:`helpers.data.loaders` ask :func:`hub_reachable` so that an offline
machine fails at once with a clear message instead of retrying for a minute.
Taught in ``course/00_introduction.ipynb`` (models by name or by Hub id).
"""

from __future__ import annotations

import os

__all__ = ["hub_reachable"]


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub (``HF_ENDPOINT``, default huggingface.co) answers an HTTP request within ``timeout`` seconds.

    The request goes through the Hub client's own session
    (``huggingface_hub.utils.get_session()``), so it takes the route a
    download takes: the proxies of ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``,
    the exemptions of ``NO_PROXY``, and ``HF_HUB_OFFLINE`` (then it is never
    reachable). Any HTTP answer counts, even an error status: the Hub, or the
    proxy in front of it, answered.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    try:
        get_session().head(endpoint, timeout=timeout, follow_redirects=False)
    except Exception:  # no answer: refused, unresolved, timed out, a proxy or TLS failure, offline mode, a bad URL
        return False
    return True
