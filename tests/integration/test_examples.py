"""Every example runs (on its embedded node) and prints what it promises."""

import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), '..', '..', 'examples')

CASES = {
    'quickstart.py': ['executed job 9', 'Total job time'],
    'exceptions_stdout.py': ["failed with 'ValueError: 3 is divisible by 3'", 'result 10'],
    'depends_instance.py': ['total=16 (same class as here: True)'],
    'setup_cleanup.py': ['[9, 900, 90000, 0]'],
    'cancel.py': ["result 'partial'", "result None"],
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_example(name):
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, name)], capture_output=True,
                          text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    for words in CASES[name]:
        assert words in proc.stdout, proc.stdout


def test_every_example_is_tested():
    assert sorted(f for f in os.listdir(EXAMPLES) if f.endswith('.py')) == sorted(CASES)
