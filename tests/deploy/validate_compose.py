"""Validates a compose file against the Compose specification's JSON schema.

    validate_compose.py SCHEMA COMPOSE_FILE

Prints every violation with its path and exits 1, or prints "valid" and exits 0.
"""

import json
import sys

import jsonschema
import yaml


def main():
    schema = json.load(open(sys.argv[1]))
    document = yaml.safe_load(open(sys.argv[2]))
    # The schema names draft 2019-09 by a URL that is not the draft's id; say it directly.
    validator_class = jsonschema.Draft201909Validator
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(document), key=lambda e: list(e.path))
    for error in errors:
        print("/".join(str(p) for p in error.path) or "(root)", ":", error.message)
    if errors:
        sys.exit(1)
    print("valid")


if __name__ == "__main__":
    main()
