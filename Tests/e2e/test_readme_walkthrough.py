"""Runs the README's walk-through against a fresh server and checks each shown output.

In the README, `*` in an output stands for anything (ids, keys, times); text
outputs are compared line by line with runs of spaces collapsed.
"""

import json
import re
import subprocess

from conftest import ROOT

FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def walkthrough_blocks() -> list[tuple[str, str | None, str | None]]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- walkthrough:start -->")[1].split("<!-- walkthrough:end -->")[0]
    blocks = [(match.group(1), match.group(2), match.end()) for match in FENCE.finditer(section)]
    steps = []
    for index, (language, body, end) in enumerate(blocks):
        if language != "sh":
            continue
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        adjacent = following and following[0] in ("json", "text") and section[end:following[2]].lstrip().startswith("```")
        steps.append((body, following[0] if adjacent else None, following[1] if adjacent else None))
    return steps


def wildcard(expected: str) -> re.Pattern:
    return re.compile("^" + ".*?".join(re.escape(part) for part in expected.split("*")) + "$", re.S)


def matches(expected, actual) -> bool:
    if isinstance(expected, str):
        return isinstance(actual, str) and wildcard(expected).match(actual) is not None
    if isinstance(expected, dict):
        return isinstance(actual, dict) and expected.keys() == actual.keys() and all(matches(expected[k], actual[k]) for k in expected)
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(map(matches, expected, actual))
    return expected == actual


def test_the_readme_walkthrough_gives_the_outputs_it_shows(keyway, tmp_path):
    steps = walkthrough_blocks()
    assert len(steps) >= 8, "the walk-through was not found in the README"
    keyway.start()
    # `swift run keyway …` in the README runs the binary under test, without rebuilding.
    script = [f'swift() {{ if [ "$1" = run ] && [ "$2" = keyway ]; then shift 2; "{keyway.binary}" "$@"; else command swift "$@"; fi; }}']
    for index, (command, _, _) in enumerate(steps):
        command = command.replace("127.0.0.1:8080", f"127.0.0.1:{keyway.port}").replace("curl ", "curl -sS ")
        script.append(f"{{\n{command}\n}} > {tmp_path}/out{index} 2> {tmp_path}/err{index} || echo $? > {tmp_path}/failed{index}")
    subprocess.run(["bash", "-c", "\n".join(script)], cwd=keyway.workdir, env=keyway.env(), check=True, timeout=120)

    for index, (command, language, expected) in enumerate(steps):
        failed = tmp_path / f"failed{index}"
        stderr = (tmp_path / f"err{index}").read_text()
        assert not failed.exists(), f"step {index} failed: {command}\n{stderr}"
        actual = (tmp_path / f"out{index}").read_text().strip()
        if language == "json":
            assert matches(json.loads(expected), json.loads(actual)), f"step {index}:\n{command}\nshown:  {expected}\ngot:    {actual}"
        elif language == "text":
            shown = [" ".join(line.split()) for line in expected.strip().splitlines()]
            got = [" ".join(line.split()) for line in actual.splitlines()]
            assert len(shown) == len(got) and all(wildcard(s).match(g) for s, g in zip(shown, got)), (
                f"step {index}:\n{command}\nshown:\n{expected}\ngot:\n{actual}"
            )
