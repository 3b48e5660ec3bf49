"""CloudFormation templates checked against AWS's current resource database
(tests/integration/test_deploy.py).

The database is the npm package @aws-cdk/aws-service-spec (db.json.gz: every
CloudFormation resource type with its properties, their types, which are
required, and its GetAtt attributes; built by the AWS CDK team from the
CloudFormation registry schemas and republished with them).  `make
deps-test` installs the version the Makefile pins (CFN_SPEC_VERSION) into
MXGATE_NPM_DIR (default ~/.cache/mxgate/npm; make exports it).

validate(template) -> [problem, ...] checks every resource: its type exists,
every property name exists for the type (nested property types too), the
required properties are there, values have the right basic shape (string /
number / boolean scalar, list, object), and every !GetAtt (also ${X.Y} in
!Sub) names an attribute the type has.  Intrinsic functions stand for a
value of any shape, except that !If checks both branches.
"""

import gzip
import json
import os
import re
from pathlib import Path

PACKAGE = "@aws-cdk/aws-service-spec"


def npm_dir():
    return Path(os.environ.get("MXGATE_NPM_DIR",
                               Path.home() / ".cache" / "mxgate" / "npm"))


def db_path():
    return npm_dir() / "node_modules" / PACKAGE / "db.json.gz"


class Spec:
    def __init__(self, path=None):
        path = Path(path or db_path())
        with gzip.open(path, "rt") as f:
            schema = json.load(f)["schema"]
        self.version = json.loads((path.parent / "package.json").read_text())["version"]
        self.resources = {e["cloudFormationType"]: e
                          for e in schema["resource"]["entities"]}
        self.types = {e["$id"]: e for e in schema["typeDefinition"]["entities"]}


# CloudFormation converts scalars (TTL: 300 is the string "300"), so a
# scalar type takes any scalar that converts; lists and objects never do.
SCALARS = {"string": lambda v: True, "date-time": lambda v: True,
           "integer": lambda v: re.fullmatch(r"-?[0-9]+", str(v)) is not None,
           "number": lambda v: re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", str(v)) is not None,
           "boolean": lambda v: str(v).lower() in ("true", "false")}


def is_intrinsic(v):
    return isinstance(v, dict) and len(v) == 1 and (
        next(iter(v)) == "Ref" or next(iter(v)).startswith("Fn::"))


class Validator:
    def __init__(self, spec, template):
        self.spec, self.template, self.problems = spec, template, []

    def problem(self, where, text):
        self.problems.append(f"{where}: {text}")

    def value(self, where, t, v):
        """Check value v against the spec's type t ({type: ...})."""
        if is_intrinsic(v):
            fn, args = next(iter(v.items()))
            if fn == "Fn::If" and isinstance(args, list) and len(args) == 3:
                for branch in args[1:]:
                    if branch != {"Ref": "AWS::NoValue"}:
                        self.value(where, t, branch)
            return
        kind = t["type"]
        if kind in SCALARS:
            if isinstance(v, (dict, list)) or v is None or not SCALARS[kind](v):
                self.problem(where, f"expects a {kind}, not {type(v).__name__} {v!r:.40}")
        elif kind == "json":
            if not isinstance(v, (dict, str)):
                self.problem(where, f"expects a JSON object, not {type(v).__name__}")
        elif kind == "array":
            if not isinstance(v, list):
                self.problem(where, f"expects a list, not {type(v).__name__}")
                return
            for i, x in enumerate(v):
                self.value(f"{where}[{i}]", t["element"], x)
        elif kind == "map":
            if not isinstance(v, dict):
                self.problem(where, f"expects a map, not {type(v).__name__}")
                return
            for k, x in v.items():
                self.value(f"{where}.{k}", t["element"], x)
        elif kind == "tag":
            self.props(where, {"Key": {"type": {"type": "string"}, "required": True},
                               "Value": {"type": {"type": "string"}, "required": True}}, v)
        elif kind == "ref":
            td = self.spec.types[t["reference"]["$ref"]]
            self.props(where, td["properties"], v)
        elif kind == "union":
            saved = self.problems
            for alt in t["types"]:
                self.problems = []
                self.value(where, alt, v)
                if not self.problems:
                    break
            else:
                self.problems = saved + [f"{where}: matches none of "
                                         f"{[a['type'] for a in t['types']]}"]
                return
            self.problems = saved
        else:
            raise AssertionError(f"{where}: unknown spec type {kind}")

    def typed(self, where, p, v):
        """A property against its current type, or one of its previous
        types (a property whose type changed keeps accepting the old one);
        the problems reported are those against the current type."""
        saved, first = self.problems, None
        for t in [p["type"]] + p.get("previousTypes", []):
            self.problems = []
            self.value(where, t, v)
            if not self.problems:
                self.problems = saved
                return
            if first is None:
                first = self.problems
        self.problems = saved + first

    def props(self, where, spec_props, v):
        if not isinstance(v, dict) or is_intrinsic(v):
            if not is_intrinsic(v):
                self.problem(where, f"expects an object, not {type(v).__name__}")
            return
        for name, x in v.items():
            if name not in spec_props:
                self.problem(where, f"unknown property {name}")
                continue
            self.typed(f"{where}.{name}", spec_props[name], x)
        for name, p in spec_props.items():
            if p.get("required") and name not in v:
                self.problem(where, f"required property {name} missing")

    def run(self):
        res = self.template.get("Resources", {})
        for name, r in res.items():
            rtype = r.get("Type", "")
            if rtype.startswith("Custom::") or rtype == "AWS::CloudFormation::CustomResource":
                continue
            spec = self.spec.resources.get(rtype)
            if spec is None:
                self.problem(name, f"unknown resource type {rtype}")
                continue
            self.props(f"{name} ({rtype})", spec["properties"], r.get("Properties", {}))
        for where, (target, attr) in getatts(self.template):
            if target not in res:
                self.problem(where, f"!GetAtt of unknown resource {target}")
                continue
            spec = self.spec.resources.get(res[target]["Type"])
            if spec is not None and attr not in spec["attributes"]:
                self.problem(where, f"!GetAtt {target}.{attr}: {res[target]['Type']} has no "
                                    f"attribute {attr} (it has {sorted(spec['attributes'])})")
        return self.problems


def getatts(node, where="template"):
    """(where, (resource, attribute)) for every !GetAtt and ${R.A} in !Sub."""
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{where}.{k}" if where else k
            if k == "Fn::GetAtt":
                target = v if isinstance(v, list) else v.split(".", 1)
                yield here, (target[0], target[1])
            elif k == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                for ref in re.findall(r"\$\{(?!!)([^}]+)\}", text):
                    if "." in ref and not ref.startswith("AWS::"):
                        a, b = ref.split(".", 1)
                        yield here, (a, b)
            yield from getatts(v, here)
    elif isinstance(node, list):
        for i, x in enumerate(node):
            yield from getatts(x, f"{where}[{i}]")


def validate(spec, template):
    return Validator(spec, template).run()
