"""The Dockerfile and .dockerignore: hadolint, and the properties the image must have."""

import fnmatch
import re
from pathlib import Path

from conftest import ROOT, run, tool

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions():
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages():
    current, result = None, {}
    for word, rest in instructions():
        if word == "FROM":
            current = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
            result[current] = [("FROM", rest)]
        elif current:
            result[current].append((word, rest))
    return result


def test_hadolint_finds_nothing():
    res = run([tool("hadolint"), "--failure-threshold", "info", "Dockerfile"], cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


def test_multi_stage_with_dependencies_cooked_in_their_own_layer():
    s = stages()
    assert list(s) == ["chef", "planner", "builder", "runtime"]
    builder = [rest for word, rest in s["builder"] if word == "RUN"]
    assert "cargo chef cook --release --locked" in builder[0], "dependencies must be cooked before the sources are copied"
    copies_before_cook = [rest for word, rest in s["builder"][: s["builder"].index(("RUN", builder[0]))] if word == "COPY"]
    assert copies_before_cook == ["--from=planner /build/recipe.json recipe.json"]
    assert any("cargo build --release --locked" in r for r in builder[1:])


def test_runtime_is_distroless_non_root_with_only_the_binary():
    runtime = stages()["runtime"]
    assert runtime[0][1].startswith("gcr.io/distroless/cc-debian12:nonroot")
    user = [rest for word, rest in runtime if word == "USER"]
    assert user and not user[-1].startswith(("0", "root"))
    copies = [rest for word, rest in runtime if word == "COPY"]
    assert copies[0] == "--from=builder /out/confab /usr/local/bin/confab"
    assert len(copies) == 2 and "/out/data /data" in copies[1], copies
    # No static files copied: the binary embeds every page it serves.
    embedded = set(re.findall(r'include_str!\("(?:\.\./)+static/([^"]+)"\)', "".join(p.read_text() for p in (ROOT / "src").rglob("*.rs"))))
    assert embedded == {p.name for p in (ROOT / "static").iterdir()}


def test_healthcheck_needs_no_shell_and_port_matches_the_listen_address():
    runtime = dict(stages()["runtime"])
    assert re.search(r'CMD \["/usr/local/bin/confab", "healthcheck"\]', runtime["HEALTHCHECK"])
    listen = re.search(r"CONFAB_LISTEN=(\S+)", runtime["ENV"]).group(1)
    assert listen.startswith("0.0.0.0:")
    assert runtime["EXPOSE"] == listen.split(":")[1]
    assert runtime["ENTRYPOINT"] == '["/usr/local/bin/confab"]'


def dockerignore_includes(path: str) -> bool:
    """Whether `path` reaches the build context (Docker's rule: the last matching pattern wins)."""
    included = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or fnmatch.fnmatch(path, pattern):
            included = negate
    return included


def test_everything_the_build_copies_is_in_the_context_and_nothing_else():
    sources = []
    for word, rest in instructions():
        if word == "COPY" and "--from=" not in rest:
            sources += rest.split()[:-1]
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such file"
        files = [src] if (ROOT / src).is_file() else [str(p.relative_to(ROOT)) for p in (ROOT / src).rglob("*") if p.is_file()]
        for f in files:
            assert dockerignore_includes(f), f"{f} is copied but excluded by .dockerignore"
    for excluded in ["target/debug/confab", "e2e/package.json", ".env", "loadtest/k6/chat.js", "helm/confab/Chart.yaml", "confab-data/confab.db"]:
        assert not dockerignore_includes(excluded), f"{excluded} should stay out of the build context"


def test_the_build_context_is_enough_to_build_confab():
    """Copy exactly what the Dockerfile copies (after .dockerignore) and compile it there, so a
    source file outside the context (a new include_str!, a migrations path) fails here, not in
    the image build. `cargo check` with the repository's target directory: only confab itself is
    compiled, and a fixed location with preserved mtimes keeps it cached between runs."""
    import os
    import shutil

    ctx = ROOT / "target" / "docker-context"
    shutil.rmtree(ctx, ignore_errors=True)
    ctx.mkdir(parents=True)
    for word, rest in instructions():
        if word == "COPY" and "--from=" not in rest:
            for src in rest.split()[:-1]:
                path = ROOT / src
                files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                for f in files:
                    rel = f.relative_to(ROOT)
                    if dockerignore_includes(str(rel)):
                        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(f, ctx / rel)
    env = {**os.environ, "CARGO_TARGET_DIR": str(ROOT / "target")}
    res = run(["cargo", "check", "--locked", "--offline", "--quiet", "--bin", "confab"], cwd=ctx, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
