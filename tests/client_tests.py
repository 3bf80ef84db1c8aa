"""What the Python tests of `chorus serve` with outside clients share (openai_client_test.py,
browser_test.py): their virtual environment, failing with a message, and a server on loopback.

The venv gets its packages from PyPI on first use, under a lock so that tests ctest runs in
parallel do not create or fill it at the same time; the calling script is then re-executed with
the venv's interpreter."""
import contextlib
import fcntl
import importlib
import os
import signal
import subprocess
import sys
import tempfile
import threading

ACTIVE = "CHORUS_TEST_VENV_ACTIVE"


def ensure_venv(venv, packages):
    """packages: {import name: pip requirement}. Returns when they all import; otherwise fills
    the venv and re-executes the script in it (this call then does not return)."""
    missing = [name for name in packages if not _importable(name)]
    if not missing:
        return
    if os.environ.get(ACTIVE):
        sys.exit("the venv at %s has no usable %s" % (venv, ", ".join(missing)))
    venv = os.path.abspath(venv)
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    python = os.path.join(venv, "bin", "python")
    with open(venv + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(python):
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        absent = [packages[name] for name in packages
                  if subprocess.run([python, "-c", "import " + name], capture_output=True).returncode != 0]
        if absent:
            pip = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check"] + absent)
            if pip.returncode != 0:
                sys.exit("pip install %s failed in %s (is PyPI reachable?)" % (" ".join(absent), venv))
    os.execve(python, [python] + sys.argv, dict(os.environ, **{ACTIVE: "1"}))


def _importable(name):
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


@contextlib.contextmanager
def serve(chorus, model, *args):
    """`chorus serve -m MODEL --port 0 ARGS...`: yields its port once the model is loaded (it
    prints the port on stdout then); afterwards stops it with SIGTERM and requires exit status 0."""
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty server never blocks on it
    proc = subprocess.Popen([chorus, "serve", "-m", model, "--port", "0"] + list(args),
                            stdout=subprocess.PIPE, stderr=log, text=True)

    def stderr():
        log.seek(0)
        return log.read()

    port = []
    reader = threading.Thread(target=lambda: port.append(proc.stdout.readline()))
    reader.start()
    reader.join(timeout=600)  # a hang guard only: the line comes when the model is loaded
    if not port or not port[0].strip().isdigit():
        proc.kill()
        proc.wait()
        fail("chorus serve did not report its port; stderr:\n" + stderr())
    try:
        yield int(port[0])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            fail("chorus serve did not stop on SIGTERM")
    check(proc.returncode == 0, "chorus serve exited with %d after SIGTERM; stderr:\n%s" % (proc.returncode, stderr()))
