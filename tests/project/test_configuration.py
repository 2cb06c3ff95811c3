import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_env_template_documents_every_variable_the_settings_read():
    settings = (ROOT / "project" / "settings.py").read_text()
    read = set(re.findall(r'config\(\s*"([A-Z_0-9]+)"', settings))
    template = (ROOT / "env-template").read_text()
    documented = set(re.findall(r"^([A-Z_0-9]+)=", template, re.MULTILINE))
    assert read, "no variables found in settings.py"
    assert read - documented == set()


def test_every_documented_variable_has_a_comment_above_it():
    lines = (ROOT / "env-template").read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[A-Z_0-9]+=", line):
            above = lines[index - 1]
            assert above.startswith("#") or re.match(r"^[A-Z_0-9]+=", above), line
