"""Property tests: any file name Linux allows survives capture and restore, and any string given
to a flag mini-language gives either a value or a one-line error.

File names are bytes (``os.fsencode`` paths): backslashes, newlines, invalid UTF-8, a leading
dash, 255-byte names and unicode, drawn by hypothesis with a fixed seed and a bounded number of
examples, each captured with ``studio run --capture-once`` and restored with ``studio get``.
The mini-languages (``DIR:TAG``, ``EXP/TAG@VERSION:ALIAS``, ``EXP/TAG@VERSION/PATH``, durations,
sizes, experiment names) are called in-process, where thousands of strings cost nothing.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile

import click
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from studio_run.cli.params import ARTIFACT_REF, CAPTURE, REUSE
from studio_run.config import parse_duration, parse_size
from studio_run.errors import StudioError
from studio_run.refs import ArtifactRef, CaptureSpec, ReuseSpec, check_experiment_name, parse_ref
from tests.faults._support import read_tree
from tests.helpers import studio, write_script

HOSTILE = [
    b"back\\slash", b"\\", b"new\nline", b"\n", b"bad-utf8-\xff\xfe", b"\xc3\x28", b"-leading-dash", b"--help",
    b"x" * 255, "\u00e9t\u00e9-\u65e5\u672c-\U0001f600".encode(), b" spaced ", b"tab\there", b"*?[glob]",
    b"$HOME", b"'quote\"", b"trailing.", b".hidden", b"carriage\rreturn", b"\x01\x7f", b"a:b@c",
    ("\u00e9" * 127).encode() + b"z",  # 255 bytes of two-byte characters
]


_CREDENTIAL_LIKE = re.compile(  # names studio leaves out of every snapshot on purpose (credential files)
    rb"(?i)(^\.env|\.env$|credentials|^secrets\.|\.pem$|\.key$|^id_(rsa|dsa|ecdsa|ed25519)|^\.netrc$|^\.pypirc$"
    rb"|^\.(aws|ssh|gnupg|docker|kube|config)$|^\.git|^\.studioignore$)")


def _valid_name(name: bytes) -> bool:
    return (0 < len(name) <= 255 and b"/" not in name and b"\0" not in name and name not in (b".", b"..")
            and not _CREDENTIAL_LIKE.search(name))


NAMES = st.one_of(
    st.sampled_from(HOSTILE),
    st.binary(min_size=1, max_size=255).filter(_valid_name),
    st.text(min_size=1, max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")[:255]).filter(_valid_name),
)


def _build(folder: bytes, names: list[bytes]) -> dict[bytes, bytes]:
    """Each name as a file at the top and inside a folder named by the first one; content names it."""
    tree: dict[bytes, bytes] = {}
    sub = names[0][:250] + b".d"
    for name in names:
        for rel in (name, os.path.join(sub, name)):
            path = os.path.join(folder, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(b"content of " + rel)
            tree[rel] = b"content of " + rel
    return tree


@pytest.fixture(scope="module")
def names_home(tmp_path_factory):
    home = str(tmp_path_factory.mktemp("names"))
    proj = os.path.join(home, "proj")
    os.makedirs(proj)
    write_script(proj, "s.py", "print('ok')\n")
    return home


@settings(max_examples=20, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(names=st.lists(NAMES, min_size=1, max_size=6, unique=True))
@example(names=HOSTILE)
def test_any_file_name_is_captured_and_restored_byte_for_byte(names_home, names):
    work = tempfile.mkdtemp(dir=names_home)
    try:
        src = os.path.join(os.fsencode(work), b"src")
        os.makedirs(src)
        expected = _build(src, names)
        proj = os.path.join(names_home, "proj")
        done = studio("run", "-e", "names", f"--capture-once={os.fsdecode(src)}:files", os.path.join(proj, "s.py"),
                      home=names_home, cwd=proj)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == 0, f"names {names!r}: {done.stderr}"
        dest = os.path.join(work, "dest")
        got = studio("get", "names/files", dest, home=names_home)
        assert got.returncode == 0, f"names {names!r}: {got.stderr}"
        assert read_tree(dest) == expected
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_hostile_names_in_the_workspace_and_a_periodic_capture_finish_the_run(tmp_path):
    """A backslash (and the rest) in the workspace or a ``--capture`` folder neither stops the run
    at start nor kills the capture thread: the run is ``finished`` and both restore exactly."""
    home = str(tmp_path)
    proj = os.path.join(os.fsencode(home), b"proj")
    os.makedirs(proj)
    workspace = _build(proj, HOSTILE[:10])
    out = os.path.join(os.fsencode(home), b"out")
    os.makedirs(out)
    captured = _build(out, HOSTILE)
    script = write_script(home, "touch.py", "import os, sys\nopen(os.path.join(sys.argv[1], 'late\\\\name'), 'w').write('late')\n")
    captured[b"late\\name"] = b"late"
    done = studio("run", "-e", "hostile", "--capture-interval", "200ms", f"--capture={os.fsdecode(out)}:out",
                  script, os.fsdecode(out), home=home, cwd=os.fsdecode(proj))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    shown = studio("show", "hostile", home=home, COLUMNS="200")
    assert shown.returncode == 0 and "finished" in shown.stdout, shown.stdout + shown.stderr
    for tag, expected in (("workspace", workspace), ("out", captured)):
        dest = os.path.join(home, f"got-{tag}")
        got = studio("get", f"hostile/{tag}", dest, home=home)
        assert got.returncode == 0, got.stderr
        assert read_tree(dest) == expected, tag


# -- flag mini-languages ---------------------------------------------------------------------

GRAMMAR = st.text(alphabet=st.sampled_from(list("ab-_.~/:@0123456789 \n\t\\eimsKMGTiBh") + ["\u0663", "\udcff", "\u00e9"]),
                  max_size=40)
ANY_TEXT = st.one_of(GRAMMAR, st.text(max_size=40),
                     st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")))
FIND = (Phase.explicit, Phase.generate)  # no shrinking: the failing string is printed as found
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _one_line(exc: BaseException) -> None:
    message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
    assert message and "\n" not in message and "\r" not in message, repr(message)


@settings(max_examples=400, derandomize=True, deadline=None, database=None, phases=FIND)
@given(text=ANY_TEXT)
def test_flag_mini_languages_give_a_value_or_a_one_line_error(text):
    try:
        spec = CAPTURE.convert(text, None, None)
    except click.BadParameter as exc:
        _one_line(exc)
    else:
        assert isinstance(spec, CaptureSpec) and NAME_RULE.fullmatch(spec.tag), spec

    for convert in (ARTIFACT_REF.convert, REUSE.convert):
        try:
            value = convert(text, None, None)
        except click.BadParameter as exc:
            _one_line(exc)
        else:
            ref = value.ref if isinstance(value, ReuseSpec) else value
            assert isinstance(ref, ArtifactRef)
            assert NAME_RULE.fullmatch(ref.experiment) and NAME_RULE.fullmatch(ref.tag), value
            if isinstance(value, ReuseSpec):
                assert NAME_RULE.fullmatch(value.alias), value

    try:
        ref = parse_ref(text)
    except ValueError as exc:
        _one_line(exc)
    else:
        assert NAME_RULE.fullmatch(ref.experiment) and NAME_RULE.fullmatch(ref.tag), ref

    try:
        name = check_experiment_name(text)
    except (StudioError, click.ClickException) as exc:
        _one_line(exc)
    else:
        assert NAME_RULE.fullmatch(name), repr(name)

    try:
        seconds = parse_duration(text)
    except StudioError as exc:
        _one_line(exc)
    else:
        assert math.isfinite(seconds) and seconds > 0, (text, seconds)

    try:
        size = parse_size(text)
    except StudioError as exc:
        _one_line(exc)
    else:
        assert isinstance(size, int) and size >= 0, (text, size)


@settings(max_examples=150, derandomize=True, deadline=None, database=None, phases=FIND)
@given(number=st.one_of(st.integers(min_value=0, max_value=10**400).map(str),
                        st.floats(allow_nan=True, allow_infinity=True).map(repr)),
       unit=st.sampled_from(["", "ms", "s", "m", "h", "B", "KiB", "MiB", "GiB", "TiB", "K", "G"]))
def test_numbers_of_any_size_in_durations_and_sizes(number, unit):
    for parse, ok in ((parse_duration, lambda v: math.isfinite(v) and v > 0),
                      (parse_size, lambda v: isinstance(v, int) and v >= 0)):
        try:
            value = parse(number + unit)
        except StudioError as exc:
            _one_line(exc)
        else:
            assert ok(value), (number + unit, value)
