import subprocess
import sys


def test_core_does_not_import_transformers():
    code = "import calderalab.core, sys; assert 'transformers' not in sys.modules and 'datasets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_version_runs():
    out = subprocess.run([sys.executable, "-m", "calderalab", "version"], check=True, capture_output=True, text=True)
    assert out.stdout.strip()
