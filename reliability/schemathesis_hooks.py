"""Schemathesis hooks for reliability/fuzz.py.

Two rules of the API cannot be written in an OpenAPI schema, so a request the schema calls valid may
still be refused with a 400 naming the parameter (as it should be):
  - `cursor` is an opaque, signed token that only the server issues: a generated string is refused;
  - a range's `*_max` must not be below its `*_min`;
  - a CSV export (`format=csv`) takes no `limit`, `cursor` or `count`.
And one rule of the responses: a row's schema requires every key the server always sends, while
`fields=a,b` asks for only those keys.
Only "schema-valid request rejected" failures whose 400 names nothing but those, and "required
property" failures for a key the request's `fields` left out, are dropped; every other failure (any
5xx, any other break of the spec, any other rejection) still fails the run.
"""

import re

import schemathesis


def _inexpressible(param):
    name = param.get("name", "")
    reason = param.get("reason", "")
    return (name == "cursor" or (name.endswith("_max") and "is below" in reason)
            or "a CSV export holds every matching row" in reason)


def _left_out_by_fields(failure, case):
    """A row without a key that `fields` did not ask for."""
    fields = (case.query or {}).get("fields")
    if type(failure).__name__ != "JsonSchemaError" or not isinstance(fields, str):
        return False
    missing = re.match(r'"(\w+)" is a required property', getattr(failure, "_raw_message", "") or "")
    return bool(missing) and missing.group(1) not in fields.split(",")


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if _left_out_by_fields(failure, case):
        return False
    if type(failure).__name__ != "RejectedPositiveData" or response.status_code != 400:
        return True
    try:
        params = response.json().get("invalid_params", [])
    except ValueError:
        return True
    return not (params and all(_inexpressible(p) for p in params))
