"""Schemathesis hooks for reliability/fuzz.py.

Two rules of the API cannot be written in an OpenAPI schema, so a request the schema calls valid may
still be refused with a 400 naming the parameter (as it should be):
  - `cursor` is an opaque, signed token that only the server issues: a generated string is refused;
  - a range's `*_max` must not be below its `*_min`.
Only "schema-valid request rejected" failures whose 400 names nothing but those are dropped; every
other failure (any 5xx, any response that breaks the spec, any other rejection) still fails the run.
"""

import schemathesis


def _inexpressible(param):
    name = param.get("name", "")
    reason = param.get("reason", "")
    return name == "cursor" or (name.endswith("_max") and "is below" in reason)


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if type(failure).__name__ != "RejectedPositiveData" or response.status_code != 400:
        return True
    try:
        params = response.json().get("invalid_params", [])
    except ValueError:
        return True
    return not (params and all(_inexpressible(p) for p in params))
