"""A Containerfile flavor's Containerfile: its instructions with their line numbers, and
`FROM cos/<flavor>` resolved to the image the build just made of that flavor.

The build pulls nothing of its own: every stage starts from the parent flavor's image
(`cos/<parent>`, optionally tagged with its version or `latest`) or from an earlier
stage, and `COPY --from=` names an earlier stage. Anything else is refused with the file
and line, before buildah runs.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import CosError

COS_IMAGE = re.compile(r"^cos/(?P<flavor>[a-z0-9][a-z0-9.-]*)(?::(?P<tag>[A-Za-z0-9_.+-]+))?$")


@dataclass(frozen=True)
class Instruction:
    line: int  # 1-based, the line the instruction starts on
    last_line: int  # the line its continuations end on
    keyword: str  # upper case
    arguments: str  # continuations joined

    @property
    def text(self) -> str:
        return f"{self.keyword} {self.arguments}".strip()


@dataclass(frozen=True)
class Containerfile:
    path: Path
    lines: list[str]
    instructions: list[Instruction]

    def where(self, instruction: Instruction) -> str:
        return f"{self.path}:{instruction.line}"

    def layer_instructions(self) -> list[Instruction]:
        """The instructions that each add a layer to the final image (`buildah bud
        --layers` commits one per RUN, COPY and ADD; the others change only the config):
        the final stage's, after those of the earlier stages it starts FROM."""
        stages: list[list[Instruction]] = []  # each: its FROM, then the rest
        for instruction in self.instructions:
            if instruction.keyword == "FROM":
                stages.append([instruction])
            elif stages:
                stages[-1].append(instruction)
        froms = [_from_line(self, stage[0]) for stage in stages]
        index_of = {str(n): n for n in range(len(stages))}
        index_of |= {line.alias: n for n, line in enumerate(froms) if line.alias}
        chain: list[Instruction] = []
        index = len(stages) - 1
        while index >= 0:
            chain[:0] = [i for i in stages[index][1:] if i.keyword in ("RUN", "COPY", "ADD")]
            below = index_of.get(froms[index].image, -1)
            index = below if below < index else -1  # resolve() allows only an earlier stage
        return chain

    def instruction_at_step(self, text: str) -> Instruction | None:
        """The instruction buildah names in a `STEP n/m: TEXT` line (it prints it joined)."""
        wanted = " ".join(text.split())
        for instruction in self.instructions:
            if " ".join(instruction.text.split()) == wanted:
                return instruction
        return None


def parse(path: Path, text: str | None = None) -> Containerfile:
    """Instructions of a Containerfile: comments and blank lines skipped, lines ending in a
    backslash joined with the next (as buildah reads them)."""
    if text is None:
        try:
            text = path.read_text()
        except OSError as e:
            raise CosError(f"{path}: cannot read the Containerfile ({e.strerror})") from None
    lines = text.splitlines()
    instructions = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1] if continued else stripped)
        if not continued:
            instructions.append(_instruction(path, start, number, " ".join(pending)))
            pending = []
    if pending:
        instructions.append(_instruction(path, start, len(lines), " ".join(pending)))
    if not instructions:
        raise CosError(f"{path}: no instructions; a Containerfile starts with FROM cos/<flavor>")
    if instructions[0].keyword not in ("FROM", "ARG"):
        first = instructions[0]
        raise CosError(f"{path}:{first.line}: {first.keyword}: the first instruction must be FROM")
    return Containerfile(path, lines, instructions)


def _instruction(path: Path, line: int, last: int, joined: str) -> Instruction:
    keyword, _, arguments = joined.strip().partition(" ")
    if not re.fullmatch(r"[A-Za-z]+", keyword):
        raise CosError(f"{path}:{line}: {keyword!r} is not an instruction")
    return Instruction(line, last, keyword.upper(), arguments.strip())


@dataclass(frozen=True)
class FromLine:
    instruction: Instruction
    image: str
    alias: str | None


def _from_line(cf: Containerfile, instruction: Instruction) -> FromLine:
    words = instruction.arguments.split()
    flags = [w for w in words if w.startswith("--")]
    words = [w for w in words if not w.startswith("--")]
    where = cf.where(instruction)
    if flags:
        raise CosError(
            f"{where}: FROM {' '.join(flags)}: options are not taken here; the arch comes "
            "from `invoke build --arch`"
        )
    if len(words) == 1:
        return FromLine(instruction, words[0], None)
    if len(words) == 3 and words[1].upper() == "AS":
        return FromLine(instruction, words[0], words[2])
    raise CosError(f"{where}: FROM {instruction.arguments}: expected FROM IMAGE [AS NAME]")


def resolve(
    cf: Containerfile, parent: str, parent_version: str, flavors: list[str], archive: Path
) -> str:
    """The Containerfile's text with every `FROM cos/<parent>` naming `oci-archive:archive`
    (the parent's image as this build made it), line numbers kept. Raises CosError naming
    the file and line for a FROM that is not the parent flavor or an earlier stage."""
    lines = list(cf.lines)
    stages: list[str] = []  # names of the stages so far: their numbers and aliases
    count = 0
    for instruction in cf.instructions:
        where = cf.where(instruction)
        if instruction.keyword in ("COPY", "ADD"):
            _check_copy_from(cf, instruction, stages)
            continue
        if instruction.keyword != "FROM":
            continue
        line = _from_line(cf, instruction)
        image = line.image
        if image in stages:
            replacement = image
        else:
            if "$" in image:
                raise CosError(f"{where}: FROM {image}: name the flavor, not a variable")
            match = COS_IMAGE.match(image)
            if match is None:
                raise CosError(
                    f"{where}: FROM {image} is not a cOS flavor image; a derivative starts "
                    f"FROM cos/<flavor> (flavors: {', '.join(flavors)}) or an earlier stage"
                )
            flavor, tag = match["flavor"], match["tag"]
            if flavor not in flavors:
                raise CosError(
                    f"{where}: FROM {image}: no flavor {flavor!r}; flavors: {', '.join(flavors)}"
                )
            if flavor != parent:
                raise CosError(
                    f"{where}: FROM {image}: this flavor builds on {parent} (its flavor.yaml "
                    f"parent); start FROM cos/{parent}"
                )
            if tag not in (None, "latest", parent_version):
                raise CosError(
                    f"{where}: FROM {image}: the {parent} this build makes is version "
                    f"{parent_version}; name no tag, latest or {parent_version}"
                )
            replacement = f"oci-archive:{archive}"
        stages.append(str(count))
        count += 1
        if line.alias:
            stages.append(line.alias)
        alias = f" AS {line.alias}" if line.alias else ""
        lines[instruction.line - 1] = f"FROM {replacement}{alias}"
        for number in range(instruction.line, instruction.last_line):
            lines[number] = ""  # the continuation lines, now joined into the first
    return "\n".join(lines) + "\n"


def _check_copy_from(cf: Containerfile, instruction: Instruction, stages: list[str]) -> None:
    for word in instruction.arguments.split():
        if word.startswith("--from="):
            source = word.removeprefix("--from=")
            if source not in stages:
                raise CosError(
                    f"{cf.where(instruction)}: {instruction.keyword} {word}: only an earlier "
                    "stage can be copied from (the build pulls no image)"
                )
