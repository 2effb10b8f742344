"""The steps of a stage, in the order they run: sources in order, steps in source order,
a step after the named steps it depends_on (yip's ordering). Every step's shape is checked
here, before any runs; a step with a problem does not run, the others do."""

from dataclasses import dataclass, field

from cos_cloud_config import cloudinit, table
from cos_cloud_config.sources import Document, Loaded


@dataclass
class Step:
    origin: str  # "FILE: stages.boot[2]" or "FILE: runcmd"
    fields: dict  # actions and step fields
    problems: list[str] = field(default_factory=list)  # the step does not run
    dropped: list[str] = field(default_factory=list)  # entries left out; the rest runs
    warnings: list[str] = field(default_factory=list)  # keys ignored, by name

    @property
    def name(self) -> str | None:
        name = self.fields.get("name")
        return str(name) if name is not None else None

    @property
    def depends_on(self) -> list[str]:
        value = self.fields.get("depends_on") or []
        return [value] if isinstance(value, str) else [str(v) for v in value]

    @property
    def title(self) -> str:
        return f"{self.origin} {self.name!r}" if self.name else self.origin


def stage_parts(stage: str) -> list[str]:
    """A bare stage name runs its .before, itself and its .after."""
    return [stage] if "." in stage else [f"{stage}.before", stage, f"{stage}.after"]


def steps_for(part: str, loaded: Loaded) -> list[Step]:
    steps: list[Step] = []
    hostname = loaded.meta_data.get("local-hostname")
    if part == "boot" and hostname:
        # The datasource's name comes first; a user-data hostname overrides it.
        steps.append(Step("NoCloud meta-data local-hostname", {"hostname": str(hostname)}))
    for doc in loaded.documents:
        steps += _from_stage_syntax(part, doc)
        steps += _from_cloud_config(part, doc)
        if doc.script is not None and part == "network":
            steps.append(Step(f"{doc.origin}: user script", {"commands": [_run_script(doc)]}))
        if doc.boothook is not None and part == "boot.before":
            steps.append(Step(f"{doc.origin}: boothook", {"commands": [doc.boothook]}))
    for step in steps:
        check_step(step)
    return ordered(steps)


def _run_script(doc: Document) -> list[str]:
    """A user-data script runs as the program its #! line names (sh reads the rest)."""
    interpreter = doc.script.split("\n", 1)[0][2:].split()
    return [*interpreter, "-c", doc.script] if interpreter else ["sh", "-c", doc.script]


def check_step(step: Step) -> None:
    """Each action's shape; a list or mapping keeps its good entries (one user with a
    wrong field does not keep the other users from being made)."""
    for key, value in list(step.fields.items()):
        check = table.BY_KEY[key].check if key in table.BY_KEY else table.STEP_FIELDS.get(key)
        if check is None:
            continue
        path = f"{step.origin}.{key}"
        problems = check(value, path)
        kept = prune(value, problems, path)
        if kept is None:
            step.problems += problems
        else:
            step.fields[key] = kept
            step.dropped += problems


def prune(value, problems: list[str], path: str):
    """`value` without the entries the problems are about; None when a problem is about
    the value as a whole (or there is nothing to prune)."""
    if not problems:
        return value
    if isinstance(value, list):
        entries = {i: f"{path}[{i}]" for i in range(len(value))}
    elif isinstance(value, dict):
        entries = {k: f"{path}.{k}" for k in value}
    else:
        return None

    def entry_of(problem: str):
        return next(
            (k for k, w in entries.items() if problem.startswith((w + ".", w + "[", w + ":"))), None
        )

    bad = {entry_of(p) for p in problems}
    if None in bad:
        return None
    if isinstance(value, list):
        return [v for i, v in enumerate(value) if i not in bad]
    return {k: v for k, v in value.items() if k not in bad}


def step_warnings(step: Step) -> list[str]:
    warnings = []
    for key in step.fields:
        if key in table.UNSUPPORTED_STEP_KEYS:
            warnings.append(
                f"{step.origin}.{key}: not supported ({table.UNSUPPORTED_STEP_KEYS[key]}); ignored"
            )
        elif key not in table.BY_KEY and key not in table.STEP_FIELDS:
            known = ", ".join([*table.STEP_FIELDS, *table.BY_KEY])
            warnings.append(f"{step.origin}.{key}: unknown key; ignored (known: {known})")
    return warnings


def _from_stage_syntax(part: str, doc: Document) -> list[Step]:
    stages = doc.data.get("stages")
    if not isinstance(stages, dict):
        return []
    found = []
    entries = stages.get(part)
    if entries is not None and not isinstance(entries, list):
        origin = f"{doc.origin}: stages.{part}"
        return [Step(origin, {}, [f"{origin}: expected a list of steps, got {entries!r}"])]
    for index, entry in enumerate(entries or []):
        origin = f"{doc.origin}: stages.{part}[{index}]"
        if not isinstance(entry, dict):
            found.append(Step(origin, {}, [f"{origin}: a step must be a mapping, got {entry!r}"]))
            continue
        step = Step(origin, entry)
        step.warnings = step_warnings(step)
        found.append(step)
    return found


def _from_cloud_config(part: str, doc: Document) -> list[Step]:
    found = []
    for key in cloudinit.KEYS:
        if key.stage != part or key.key not in doc.data:
            continue
        value = doc.data[key.key]
        origin = f"{doc.origin}: {key.key}"
        problems = key.check(value, origin)
        kept = prune(value, problems, origin)
        if kept is None:
            found.append(Step(origin, {}, problems))
            continue
        value = kept
        warnings: list[str] = []
        actions = key.to_step(value, doc.data, warnings)
        if actions or problems or warnings:
            notes = [f"{doc.origin}: {w}" for w in warnings]
            found.append(Step(origin, actions, dropped=problems, warnings=notes))
    return found


def document_problems(doc: Document) -> tuple[list[str], list[str]]:
    """What is wrong with a document as a whole, whatever the stage: (errors, warnings)."""
    errors, warnings = [], []
    stages = doc.data.get("stages")
    if stages is not None and not isinstance(stages, dict):
        errors.append(f"{doc.origin}: stages: expected a mapping of stage -> steps")
    for name in stages if isinstance(stages, dict) else []:
        if not table.valid_stage(str(name)):
            errors.append(
                f"{doc.origin}: stages.{name}: unknown stage; known: {', '.join(table.STAGES)}"
            )
    for key in doc.data:
        if key in ("stages", "name", "strict") or key in cloudinit.KNOWN_KEYS:
            continue
        reason = cloudinit.UNSUPPORTED.get(key)
        warnings.append(
            f"{doc.origin}: {key}: " + (f"{reason}; ignored" if reason else "unknown key; ignored")
        )
    return errors, warnings


def ordered(steps: list[Step]) -> list[Step]:
    """Source order, except that a step comes after the steps it depends on. A missing
    dependency or a cycle is a problem of that step (it does not run)."""
    by_name: dict[str, Step] = {}
    for step in steps:
        if step.name is not None:
            by_name.setdefault(step.name, step)
    result: list[Step] = []
    placed: set[int] = set()
    visiting: set[int] = set()

    def place(step: Step) -> None:
        if id(step) in placed:
            return
        if id(step) in visiting:
            step.problems.append(f"{step.origin}: depends_on forms a cycle through {step.name!r}")
            return
        visiting.add(id(step))
        for name in step.depends_on:
            if name not in by_name:
                step.problems.append(
                    f"{step.origin}: depends_on {name!r}: no step of this stage has that name"
                )
            else:
                place(by_name[name])
        visiting.discard(id(step))
        placed.add(id(step))
        result.append(step)

    for step in steps:
        place(step)
    return result
