"""A YAML file, loaded by PyYAML (a YAML parser sgctl shares no code with),
printed as JSON on stdout: what a real parser makes of a file sgctl wrote.
Usage: yaml_to_json.py FILE"""
import json
import sys

import yaml

with open(sys.argv[1], "rb") as f:
    doc = yaml.safe_load(f)
json.dump(doc, sys.stdout, ensure_ascii=True)
