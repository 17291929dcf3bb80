"""docs/TUTORIAL.md cannot drift away from ddpg.py.

Every code span of the tutorial that looks like code must name something that exists:
  - flags (`--noise-type ou`, `--no-cuda`) are fields of ddpg.Args, and a value given to a
    Literal flag is one of its choices;
  - names (`ReplayBuffer`, `Learner.critic_loss`, `bellman_target`) resolve as attributes of the
    imported ddpg module, dotted paths walking attributes (of a small example instance when the
    attribute is set in __init__, like `Learner.actor_target`); keyword arguments in a call span
    (`QNetwork.forward(..., detach_params=True)`) are parameters of the function;
  - TensorBoard tags (`eval/return_mean`) are written somewhere in ddpg.py;
  - shell commands in code spans and fenced blocks (`python ddpg.py ...`, the sweep script's
    grid and pass-through flags) use existing flags;
  - algorithm boxes (a fenced block after `<!-- algorithm -->`): every line ends with
    `# name, name` naming the ddpg.py functions or classes that do it, and its --flags exist;
  - excerpts (a ```python block after `<!-- excerpt: ddpg.py -->`) appear in ddpg.py verbatim,
    lines in the same order, up to one common indentation; the tutorial quotes the three methods
    of the update (REQUIRED_EXCERPTS);
  - every experiment figure in docs/figs (a PNG with its table) is shown in the tutorial.
Only the short ALLOWED_* lists below are exempt. The tutorial's math must also avoid the
constructs that GitHub's markdown mangles before MathJax sees them, and its links must resolve.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import shlex
import textwrap
import typing
from pathlib import Path

import numpy as np
import torch

import ddpg

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = REPO / "docs" / "TUTORIAL.md"

# Code spans and identifiers that are deliberately not ddpg.py names. Keep these short.
ALLOWED_SPANS = {"error:"}  # the prefix of the one-line error message
ALLOWED_NAMES = {"terminated", "truncated"}  # gymnasium's two end-of-episode flags
HELPER_SCRIPTS = ("experiments/sweep.py", "experiments/plot.py")


def script_flags(rel: str) -> set[str]:
    """The --flags a helper script's argparse parser declares (read from its source, not imported)."""
    path = REPO / rel
    return set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", path.read_text())) if path.is_file() else set()


def sweep_reserved() -> set[str]:
    """ddpg.py options that sweep.py sets itself and refuses in --grid or after `--`."""
    path = REPO / "experiments" / "sweep.py"
    for node in ast.parse(path.read_text()).body if path.is_file() else []:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "RESERVED" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


# Flags of the helper scripts; after the sweep's lone `--`, and in its --grid, come ddpg.py's.
OTHER_SCRIPT_FLAGS = {rel: script_flags(rel) for rel in HELPER_SCRIPTS}
RESERVED_BY_SWEEP = sweep_reserved()
FIELDS = {f.name for f in dataclasses.fields(ddpg.Args)}
SCRIPT_ONLY_FLAGS = {f for flags in OTHER_SCRIPT_FLAGS.values() for f in flags if f[2:].replace("-", "_") not in FIELDS}
FILE_SUFFIXES = (".py", ".md", ".json", ".pt", ".txt", ".png", ".svg", ".pdf", ".csv", ".yml", ".yaml", ".toml")
TAG_PREFIXES = ("charts/", "eval/", "losses/", "noise/")
PROGRAMS_NOT_CHECKED = {"tensorboard", "pip", "git"}

# What issue 7 asks the tutorial to explain, each pointing to the code that implements it.
REQUIRED = {
    "Actor", "QNetwork", "ReplayBuffer", "ReplayBuffer.add", "ReplayBuffer.sample", "bellman_target",
    "polyak_update", "Learner", "Learner.critic_loss", "Learner.actor_loss", "Learner.update", "GaussianNoise",
    "OUNoise", "ParamNoise", "ParamNoise.adapt", "init_", "train", "evaluate", "Args",
    "--start-steps", "--tau", "--gamma", "--buffer-size", "--noise-type", "--noise-std", "--ou-theta", "--ou-dt",
    "--param-noise-target-std", "--param-noise-adapt-coef", "--param-noise-adapt-interval", "--target-noise",
    "--target-noise-clip", "--num-q", "--q-reduce", "--q-data-fraction", "--policy-delay", "--actor-layer-norm",
    "--critic-layer-norm", "--weights-init", "--bias-init", "--max-episode-steps",
}

# Code blocks bound to ddpg.py by the HTML comment on the line before their opening fence.
ALGORITHM_MARK = "<!-- algorithm -->"
EXCERPT_MARK = "<!-- excerpt: ddpg.py -->"
REQUIRED_EXCERPTS = ("Learner.critic_loss", "Learner.actor_loss", "Learner.update")  # some excerpt lies in each
FLAG_IN_TEXT = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")

HINTS = typing.get_type_hints(ddpg.Args)
CHOICES = {name: set(typing.get_args(h)) for name, h in HINTS.items() if typing.get_origin(h) is typing.Literal}
CHOICES["noise_type"] = set(ddpg.NOISES)  # a str flag whose values are the keys of the noise registry
ALL_CHOICES = set().union(*CHOICES.values())  # `min`, `ou`, `xavier`: values of flags, named alone


@functools.cache
def example(cls: type):
    """A small instance of a ddpg class, to find attributes that __init__ sets."""
    args = ddpg.Args(hidden_sizes=(8, 8))
    low, high = np.array([-1.0, -1.0]), np.array([1.0, 3.0])
    scale = (high - low) / 2
    makers = {
        ddpg.Learner: lambda: ddpg.Learner(3, 2, low, high, args),
        ddpg.Args: lambda: args,
        ddpg.Actor: lambda: ddpg.Actor(3, 2, (8, 8), low, high),
        ddpg.QNetwork: lambda: ddpg.QNetwork(3, 2, (8, 8), num_q=2),
        ddpg.ReplayBuffer: lambda: ddpg.ReplayBuffer(8, 3, 2, torch.device("cpu")),
        ddpg.Noise: lambda: ddpg.Noise(scale),
        ddpg.GaussianNoise: lambda: ddpg.GaussianNoise(scale, 0.1),
        ddpg.OUNoise: lambda: ddpg.OUNoise(scale, 0.1, 0.15, 0.01),
        ddpg.ParamNoise: lambda: ddpg.ParamNoise(ddpg.Actor(3, 2, (8, 8), low, high), 0.1, 0.2, 1.01, 50, 4),
    }
    return makers[cls]() if cls in makers else None


def resolve(path: str):
    """ddpg.<path>, walking attributes; raises LookupError naming the first missing part."""
    parts = path.split(".")
    if parts[0] == "ddpg":
        parts = parts[1:]
    obj = ddpg
    for i, part in enumerate(parts):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        instance = example(obj) if inspect.isclass(obj) else None
        if instance is not None and hasattr(instance, part):
            obj = getattr(instance, part)
            continue
        raise LookupError(".".join(parts[: i + 1]))
    return obj


class Checker:
    def __init__(self):
        self.problems: list[str] = []
        self.referenced: set[str] = set()
        self.algorithm_boxes = 0  # checked algorithm boxes
        self.excerpt_spans: list[tuple[int, int]] = []  # ddpg.py lines (first, last) of each verbatim excerpt
        self.source = (REPO / "ddpg.py").read_text()

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    # --- flags and commands ---
    def flags(self, tokens: list[str], where: str) -> None:
        """`--flag [value]` sequences of ddpg.py."""
        literal = None  # the Literal field whose value comes next
        for tok in tokens:
            if tok == "--":
                literal = None
                continue
            if tok.startswith("-"):
                literal = self.flag(tok, where)
            elif literal is not None:
                if tok not in CHOICES[literal]:
                    self.problem(where, f"{tok!r} is not a choice of --{literal.replace('_', '-')} "
                                        f"({', '.join(sorted(CHOICES[literal]))})")
                literal = None

    def flag(self, tok: str, where: str) -> str | None:
        name, _, value = tok.partition("=")
        if name in ("--help", "-h"):
            return None
        if not name.startswith("--") or "_" in name:
            self.problem(where, f"{tok!r} is not a kebab-case --flag")
            return None
        field = name[2:].replace("-", "_")
        if field in FIELDS:
            self.referenced.add(name)
        elif field.startswith("no_") and field[3:] in FIELDS and HINTS[field[3:]] is bool:
            self.referenced.add("--" + name[5:])
        else:
            self.problem(where, f"{name} is not a flag of ddpg.py (no field {field!r} in ddpg.Args)")
            return None
        if field in CHOICES and value:
            if value not in CHOICES[field]:
                self.problem(where, f"{value!r} is not a choice of {name}")
            return None
        return field if field in CHOICES else None

    def command(self, line: str, where: str) -> None:
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as e:
            self.problem(where, f"cannot parse command {line!r}: {e}")
            return
        while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", tokens[0]):  # OMP_NUM_THREADS=1 python ...
            tokens.pop(0)
        if not tokens or tokens[0] in PROGRAMS_NOT_CHECKED or Path(tokens[0]).name not in ("python", "python3",
                                                                                             "python3.11"):
            return
        if len(tokens) < 2 or tokens[1] == "-m":
            return
        script, rest = tokens[1], tokens[2:]
        if Path(script).name == "ddpg.py":
            self.flags(rest, where)
        elif script in OTHER_SCRIPT_FLAGS:
            if not (REPO / script).is_file():
                self.problem(where, f"{script} does not exist")
                return
            own, passthrough = (rest[: rest.index("--")], rest[rest.index("--") + 1:]) if "--" in rest else (rest, [])
            current = None
            for tok in own:
                if tok.startswith("--"):
                    current = tok.split("=")[0]
                    if current not in OTHER_SCRIPT_FLAGS[script]:
                        self.problem(where, f"{current} is not a flag of {script} as the tutorial describes it")
                elif current == "--grid":  # flag-name=v1,v2: a ddpg.py flag and values it accepts
                    key, _, values = tok.partition("=")
                    if key in RESERVED_BY_SWEEP:
                        self.problem(where, f"--grid {key}: {script} sets --{key} itself and refuses it")
                    for value in values.split(",") if key.replace("-", "_") in CHOICES else [""]:
                        self.flags([f"--{key}", value] if value else [f"--{key}"], where)
            for tok in passthrough:
                key = tok.split("=")[0][2:] if tok.startswith("--") else None
                if key and (key in RESERVED_BY_SWEEP or key.removeprefix("no-") in RESERVED_BY_SWEEP):
                    self.problem(where, f"--{key} after `--`: {script} sets it itself and refuses it")
            self.flags(passthrough, where)
        else:
            self.problem(where, f"unknown script {script!r} in command {line!r}")

    # --- names ---
    def name(self, path: str, where: str):
        if path in ALLOWED_NAMES or path in ALL_CHOICES:
            return None
        try:
            obj = resolve(path)
        except LookupError as e:
            self.problem(where, f"`{path}` does not exist in ddpg.py (first missing: {e.args[0]!r})")
            return None
        self.referenced.add(path[5:] if path.startswith("ddpg.") else path)
        return obj

    def expression(self, span: str, where: str) -> None:
        try:
            tree = ast.parse(span, mode="eval")
        except SyntaxError:
            self.problem(where, f"`{span}` is neither a ddpg.py name, a flag, a command nor a path; "
                                "use $math$ for formulas or allow-list it in tests/test_tutorial.py")
            return

        def dotted(node) -> str | None:
            if isinstance(node, ast.Name):
                return node.id
            if isinstance(node, ast.Attribute):
                inner = dotted(node.value)
                return f"{inner}.{node.attr}" if inner else None
            return None

        def visit(node) -> None:
            path = dotted(node)
            if path is not None:
                self.name(path, where)
                return
            if isinstance(node, ast.Call):
                func = self.name(dotted(node.func), where) if dotted(node.func) else visit(node.func)
                for arg in node.args:
                    visit(arg)
                for kw in node.keywords:
                    visit(kw.value)
                    if func is not None and kw.arg is not None:
                        try:
                            params = inspect.signature(func).parameters
                        except (TypeError, ValueError):
                            continue
                        has_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
                        if kw.arg not in params and not has_kwargs:
                            self.problem(where, f"`{dotted(node.func)}` has no parameter {kw.arg!r}")
                return
            for child in ast.iter_child_nodes(node):
                visit(child)

        visit(tree.body)

    # --- spans ---
    def span(self, span: str, where: str) -> None:
        s = span.strip()
        if not s or s in ALLOWED_SPANS:
            return
        if s.startswith("-") and s.split()[0] in SCRIPT_ONLY_FLAGS:
            return  # `--grid`, `--seeds`: the helper scripts' own flags, named in prose
        if s.startswith("-"):
            self.flags(s.split(), where)
        elif s.split()[0] in PROGRAMS_NOT_CHECKED or s.split()[0].startswith(("python", "OMP_NUM_THREADS=")):
            self.command(s, where)
        elif s.startswith(TAG_PREFIXES) and re.fullmatch(r"[a-z]+/[a-z_]+", s):
            metric = s.startswith("losses/") and s.split("/")[1] in ddpg.Metrics._fields  # logged as losses/<name>
            if f'"{s}"' not in self.source and not metric:
                self.problem(where, f"TensorBoard tag `{s}` is not written by ddpg.py")
        elif "/" in s or "<" in s or s.endswith(FILE_SUFFIXES):
            return  # a path, a file name, a placeholder like runs/<sweep>
        else:
            self.expression(s, where)


FENCE = re.compile(r"^(```|~~~)\s*([\w+-]*)\s*$")
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)


def split_fences(text: str) -> tuple[str, list[tuple[str, int, str]]]:
    """The prose with fenced blocks blanked out, and the blocks as (info, first line, body)."""
    prose, blocks, fence, info, start, body = [], [], None, "", 0, []
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line.strip())
        if fence is None and m:
            fence, info, start, body = m.group(1), m.group(2), n, []
            prose.append("")
        elif fence is not None and line.strip() == fence:
            blocks.append((info, start, "\n".join(body)))
            fence = None
            prose.append("")
        elif fence is not None:
            body.append(line)
            prose.append("")
        else:
            prose.append(line)
    assert fence is None, f"unclosed code fence opened at line {start}"
    return "\n".join(prose), blocks


def marked_blocks(text: str, mark: str) -> tuple[list[tuple[str, int, str]], list[str]]:
    """The fenced blocks (info, first line, body) whose opening fence follows the HTML comment
    `mark` (blank lines between allowed), and a problem for each mark that no block follows."""
    prose, blocks = split_fences(text)
    starts = {block[1]: block for block in blocks}
    lines = prose.splitlines()
    found, problems = [], []
    for n, line in enumerate(lines, 1):
        if line.strip() != mark:
            continue
        k = n + 1
        while k <= len(lines) and not lines[k - 1].strip() and k not in starts:
            k += 1
        if k in starts:
            found.append(starts[k])
        else:
            problems.append(f"line {n}: {mark} is not followed by a fenced code block")
    return found, problems


def algorithm_box(c: Checker, start: int, body: str) -> None:
    """Every line of the box ends with `# name, name`: ddpg.py functions or classes; --flags exist."""
    for k, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        where = f"algorithm box at line {start}, line {k}"
        code, sep, names = line.rpartition("#")
        if not sep or not names.strip():
            c.problem(where, f"names no ddpg.py function; end it with '# function, Class.method': {line.strip()!r}")
            continue
        for name in (n.strip() for n in names.split(",")):
            try:
                obj = resolve(name)
            except LookupError as e:
                c.problem(where, f"`{name}` does not exist in ddpg.py (first missing: {e.args[0]!r})")
                continue
            if not callable(obj):
                c.problem(where, f"`{name}` is not a function or class of ddpg.py")
                continue
            c.referenced.add(name)
        for m in FLAG_IN_TEXT.finditer(code):
            c.flag(m.group(0), where)


def find_excerpt(lines: list[str], source: list[str]) -> tuple[int, int]:
    """Where in source the lines start and how many of them match there, at the place that matches
    the most (all of them: a verbatim copy); (-1, 0) if even the first line is nowhere. The lines
    match source after one indentation is added to all of them."""
    first_indent = len(lines[0]) - len(lines[0].lstrip())
    best = (-1, 0)
    for i, src in enumerate(source):
        base = len(src) - len(src.lstrip()) - first_indent
        if base < 0 or src.strip() != lines[0].strip():
            continue
        matched = 0
        for j, line in enumerate(lines):
            expected = " " * base + line if line.strip() else ""
            if i + j >= len(source) or source[i + j].rstrip() != expected.rstrip():
                break
            matched += 1
        if matched > best[1]:
            best = (i, matched)
        if matched == len(lines):
            break
    return best


def excerpt(c: Checker, info: str, start: int, body: str) -> tuple[int, int] | None:
    """The ddpg.py line range (1-based, inclusive) the excerpt is a verbatim copy of, or None."""
    where = f"excerpt at line {start}"
    if info != "python":
        c.problem(where, f"an excerpt of ddpg.py must be a python block, not {info or 'plain'!r}")
        return None
    lines = textwrap.dedent(body).strip("\n").splitlines()
    if not lines:
        c.problem(where, "is empty")
        return None
    source = c.source.splitlines()
    at, matched = find_excerpt(lines, source)
    if matched == len(lines):
        return at + 1, at + len(lines)
    if matched == 0:
        c.problem(where, f"its first line {lines[0].strip()!r} is not in ddpg.py")
    else:
        i = at + matched
        theirs = source[i].strip() if i < len(source) else "<end of ddpg.py>"
        c.problem(where, f"not verbatim in ddpg.py: its line {matched + 1} {lines[matched].strip()!r} is "
                         f"{theirs!r} in ddpg.py; copy the current code into the tutorial")
    return None


def check(text: str) -> Checker:
    c = Checker()
    prose, blocks = split_fences(text)
    for m in CODE_SPAN.finditer(prose):
        line = prose.count("\n", 0, m.start()) + 1
        c.span(m.group(2).replace("\n", " "), f"line {line}")
    for info, start, body in blocks:
        if info in ("python", "text", "math"):  # code sketches and math, not commands
            continue
        lines = body.replace("\\\n", " ").splitlines()
        for k, line in enumerate(lines):
            if line.strip() and not line.strip().startswith("#"):
                c.command(line, f"block at line {start}, line {k + 1}")
    boxes, unmarked = marked_blocks(text, ALGORITHM_MARK)
    for _, start, body in boxes:
        algorithm_box(c, start, body)
    c.algorithm_boxes = len(boxes)
    excerpts, more = marked_blocks(text, EXCERPT_MARK)
    for info, start, body in excerpts:
        span = excerpt(c, info, start, body)
        if span is not None:
            c.excerpt_spans.append(span)
    c.problems += unmarked + more
    return c


def source_span(name: str) -> tuple[int, int]:
    """The ddpg.py lines (1-based, inclusive) of a function or method."""
    lines, first = inspect.getsourcelines(resolve(name))
    return first, first + len(lines) - 1


def math_segments(text: str) -> tuple[list[str], list[str], list[str]]:
    """(display blocks, inline segments, problems with the $ delimiters) of the prose."""
    prose, _ = split_fences(text)
    prose = CODE_SPAN.sub(" ", prose)
    problems = []
    if prose.count("$$") % 2:
        problems.append("unbalanced $$")
    display = re.findall(r"\$\$(.+?)\$\$", prose, re.DOTALL)
    rest = re.sub(r"\$\$(.+?)\$\$", " ", prose, flags=re.DOTALL)
    inline = []
    for paragraph in re.split(r"\n\s*\n", rest):
        flat = paragraph.replace("\n", " ")
        if flat.count("$") % 2:
            problems.append(f"odd number of $ in paragraph: {flat[:80]!r}")
            continue
        inline += re.findall(r"\$([^$]+)\$", flat)
    for seg in inline:
        if seg != seg.strip():
            problems.append(f"inline math must not start or end with a space: ${seg}$")
    return display, inline, problems


def math_problems(text: str) -> list[str]:
    display, inline, problems = math_segments(text)
    for seg in display + inline:
        if "\\begin{align" in seg:
            problems.append(f"\\begin{{align}} inside $$ (GitHub's MathJax rejects it): {seg.strip()[:60]}")
        for bad in ("\\\\", "\\{", "\\}", "\\,", "\\;", "\\!", "\\|", "\\_"):
            if bad in seg:  # markdown eats the backslash before punctuation
                problems.append(f"{bad!r} in math (markdown removes the backslash): {seg.strip()[:60]}")
        if "*" in seg:
            problems.append(f"'*' in math can open markdown emphasis; use \\star or \\cdot: {seg.strip()[:60]}")
        for m in re.finditer(r"_", seg):  # after punctuation, _ can open markdown emphasis
            if m.start() == 0 or not seg[m.start() - 1].isalnum():
                problems.append(f"'_' after {seg[m.start() - 1:m.start()]!r} can open markdown emphasis: "
                                f"{seg.strip()[:60]}")
        if re.search(r"<[A-Za-z/!]", seg):
            problems.append(f"'<' before a letter reads as HTML; use \\lt: {seg.strip()[:60]}")
    return problems


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_fences(path.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose, re.MULTILINE)}


def link_problems(text: str, base: Path) -> list[str]:
    prose, _ = split_fences(text)
    prose = CODE_SPAN.sub(" ", prose)
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        path = (base / file).resolve() if file else base / TUTORIAL.name
        if not path.exists():
            problems.append(f"link to a missing file: {target}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            problems.append(f"link to a missing heading: {target}")
    for m in re.finditer(r"\blines? \d+|ddpg\.py:\d+|#L\d+", prose):
        problems.append(f"refers to code by line number ({m.group(0)!r}); name the function instead")
    return problems


# ---------------------------------------------------------------------------------------------


def test_every_code_name_in_the_tutorial_exists_in_ddpg():
    checker = check(TUTORIAL.read_text())
    assert not checker.problems, "docs/TUTORIAL.md refers to things ddpg.py lacks:\n" + "\n".join(checker.problems)
    missing = REQUIRED - checker.referenced
    assert not missing, f"the tutorial no longer points to: {sorted(missing)}"


def test_algorithm_boxes_and_excerpts_follow_ddpg():
    checker = check(TUTORIAL.read_text())
    assert checker.algorithm_boxes >= 2, "the tutorial lost its algorithm boxes (section 2.4)"
    for name in REQUIRED_EXCERPTS:
        first, last = source_span(name)
        assert any(first <= a and b <= last for a, b in checker.excerpt_spans), \
            f"no verbatim excerpt of {name} in the tutorial (found {checker.excerpt_spans})"


def test_experiment_figures_are_shown_in_the_tutorial():
    text = TUTORIAL.read_text()
    figures = sorted(p.stem for p in (REPO / "docs" / "figs").glob("*.png") if p.with_suffix(".md").is_file())
    assert figures, "docs/figs holds no figures"
    prose, _ = split_fences(text)
    shown = set(re.findall(r"!\[[^\]]*\]\(figs/([\w.-]+)\.png\)", CODE_SPAN.sub(" ", prose)))
    missing = [name for name in figures if name not in shown]
    assert not missing, f"figures not shown in docs/TUTORIAL.md: {missing} (embed them as ![...](figs/NAME.png))"


def test_the_box_and_excerpt_checks_catch_drift():
    actor_loss = textwrap.dedent(inspect.getsource(ddpg.Learner.actor_loss))
    update = textwrap.dedent(inspect.getsource(ddpg.Learner.update)).splitlines()
    tail = "\n".join(update[next(i for i, ln in enumerate(update) if "n_actor_updates += 1" in ln):])
    good = f"""
<!-- algorithm -->
```text
y = r + gamma (1 - terminated) Q'(s', mu'(s'))     # Learner.critic_loss, bellman_target
repeat --update-every x --updates-per-step times:  # train
    one update                                     # Learner.update, Batch
```

<!-- excerpt: ddpg.py -->
```python
{textwrap.indent(actor_loss, "        ")}
```

<!-- excerpt: ddpg.py -->

```python
{tail}
```
"""
    c = check(good)
    assert c.problems == [] and c.algorithm_boxes == 1 and len(c.excerpt_spans) == 2
    assert source_span("Learner.actor_loss") in c.excerpt_spans
    (first, last), = [s for s in c.excerpt_spans if s != source_span("Learner.actor_loss")]
    assert last == source_span("Learner.update")[1] and first > source_span("Learner.update")[0]

    stale = actor_loss.replace("detach_params=True", "detach_params=False")
    bad = f"""
<!-- algorithm -->
```text
y = r + gamma Q'(s', mu'(s'))     # bellman_targett
L = mean over the batch of (Q - y)^2
repeat --update-evry times        # train
count the updates                 # Learner.n_updates
```

<!-- excerpt: ddpg.py -->
```python
{stale}
```

<!-- excerpt: ddpg.py -->
```python
this line is not in ddpg.py
```

<!-- excerpt: ddpg.py -->
```text
return -q.mean()  # L = -mean_b Q(s, mu(s))
```

<!-- algorithm -->
and no block
"""
    problems = "\n".join(check(bad).problems)
    for needle in ["bellman_targett", "names no ddpg.py function", "--update-evry", "`Learner.n_updates` is not a "
                   "function", "not verbatim in ddpg.py: its line 3", "'this line is not in ddpg.py' is not in",
                   "must be a python block", "is not followed by a fenced code block"]:
        assert needle in problems, f"{needle!r} not reported; problems:\n{problems}"


def test_the_checker_catches_drift():
    """Each line of this text is wrong in one way; each must be reported (and the good ones not)."""
    bad = """
`Learner.critic_los` and `bogus_function` and `ReplayBuffer.nonexistent_slot`
`--noise-typ` then `--noise-type brownian` then `--no-seed` then `--q_reduce min` then `--weights-init=glorot`
`QNetwork.forward(..., detach=True)` and `eval/return_mea` and `y = r + gamma`

```bash
python ddpg.py --env-id Pendulum-v1 --bogus-flag 1
python experiments/sweep.py --seeds 1 2 --grid noise-kind=gaussian,ou -- --total-stepz 10
python experiments/sweep.py --grid q-reduce=min,median --workerz 2
python experiments/sweep.py --env-id Pendulum-v1 --grid seed=1,2 -- --torch-threads 1 --no-cuda
python experiments/plot.py runs/x --out docs/figs/x --colour red
```
"""
    problems = "\n".join(check(bad).problems)
    for needle in ["Learner.critic_los", "bogus_function", "ReplayBuffer.nonexistent_slot", "--noise-typ ",
                   "'brownian'", "--no-seed", "--q_reduce", "'glorot'", "no parameter 'detach'", "eval/return_mea",
                   "y = r + gamma", "--bogus-flag", "--noise-kind", "--total-stepz", "'median'", "--workerz",
                   "--grid seed", "--torch-threads after", "--no-cuda after", "--colour"]:
        assert needle in problems, f"{needle!r} not reported; problems:\n{problems}"
    good = """
`Learner.actor_target`, `Actor.action_scale`, `ReplayBuffer.valid`, `ddpg.bellman_target`, `gym.make`
`--no-cuda`, `--q-reduce mean`, `--noise-type=ou`, `--help`, `QNetwork.forward(..., detach_params=True)`
`eval/return_mean`, `terminated or truncated`, `min`, `runs/<sweep>`, `ddpg.py`, `tensorboard --logdir runs`

```bash
python ddpg.py --env-id Pendulum-v1 --num-q 2 --q-reduce min --no-torch-deterministic
python experiments/sweep.py --env-id Pendulum-v1 --seeds 1 2 3 --grid noise-type=gaussian,ou -- --total-steps 15000
python experiments/plot.py runs/noise --out docs/figs/noise --title "Exploration noise"
```
"""
    assert check(good).problems == []


def test_tutorial_math_survives_githubs_markdown():
    text = TUTORIAL.read_text()
    display, inline, _ = math_segments(text)
    assert len(display) >= 10 and len(inline) >= 30, "the tutorial's equations went missing"
    problems = math_problems(text)
    assert not problems, "\n".join(problems)
    bad = "$$\n\\begin{align} a \\\\ b \\end{align}\n$$\n\nand $ x$ and $\\mathbb{E}_{s}$ and $Q^*$ and $\\{a\\}$\n"
    found = "\n".join(math_problems(bad))
    for needle in ["begin{align}", "'\\\\\\\\'", "must not start", "'_' after '}'", "'*'", "'\\\\{'"]:
        assert needle in found, f"{needle!r} not reported:\n{found}"


def test_tutorial_links_resolve_and_no_line_numbers():
    text = TUTORIAL.read_text()
    problems = link_problems(text, TUTORIAL.parent)
    assert not problems, "\n".join(problems)
    assert "../README.md#results" in text, "section 5 must point to the README's Results section"
    assert link_problems("[x](#no-such-heading) see ddpg.py:120", TUTORIAL.parent) == [
        "link to a missing heading: #no-such-heading",
        "refers to code by line number ('ddpg.py:120'); name the function instead"]
