"""One virtual environment per peer (they pin conflicting transformers versions), created on first use
under the benchmark's cache, with torch pinned to the build this machine has on disk.

torch is installed as `torch==2.13.0` and every later install runs with a constraints file that
holds exactly that pin, so no peer's requirements can swap in another torch (any other spelling
can pull a multi-GB CUDA build). A failed install leaves `install-failed.txt` with pip's last
lines; the table reports it and the next run tries again.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from peer_specs import PEERS, Peer

TORCH_PIN = "torch==2.13.0"
WORKER = Path(__file__).resolve().with_name("peer_worker.py")


@dataclass(frozen=True)
class PeerEnv:
    """A ready environment (python set, version known) or a failed one (reason set)."""

    python: Path | None
    version: str
    reason: str = ""


def _pip(python: Path, args: list[str], constraints: Path, log: Path) -> None:
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-c", str(constraints), *args]
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=True)


def _create(peer: Peer, venv: Path, log: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    python = venv / "bin" / "python"
    constraints = venv / "constraints.txt"
    constraints.write_text(TORCH_PIN + "\n")
    _pip(python, [TORCH_PIN], constraints, log)
    if peer.no_deps:
        _pip(python, ["--no-deps", *peer.no_deps], constraints, log)
    _pip(python, [TORCH_PIN, *peer.requirements], constraints, log)


def installed_version(python: Path, package: str) -> str:
    out = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def check_torch(python: Path) -> None:
    """Refuse an environment whose torch is not the pinned build (a peer must not have replaced it)."""
    version = installed_version(python, "torch")
    if not version.startswith(TORCH_PIN.split("==")[1]):
        raise RuntimeError(f"{python} has torch {version}, not {TORCH_PIN}; delete that venv and rerun")


def ensure_env(peer_name: str, root: Path) -> PeerEnv:
    """The peer's venv under root/<venv>-venv, created (and its install logged) when missing."""
    peer = PEERS[peer_name]
    venv = root / f"{peer.venv}-venv"
    ready, log = venv / "ready", root / f"{peer.venv}-install.log"
    python = venv / "bin" / "python"
    if not ready.exists():
        print(f"creating {venv} for {peer_name} (log: {log})", flush=True)
        log.write_text("")
        try:
            _create(peer, venv, log)
            check_torch(python)
        except (subprocess.CalledProcessError, RuntimeError) as err:
            return PeerEnv(None, "-", f"install failed ({err.__class__.__name__}): {last_line(log.read_text())}")
        ready.write_text("ok\n")
    try:
        return PeerEnv(python, installed_version(python, peer.package))
    except subprocess.CalledProcessError:
        return PeerEnv(None, "-", f"{peer.package} is not importable in {venv}")


def last_line(text: str, limit: int = 160) -> str:
    """The last non-empty, non-warning line of a log, as one table cell (no '|', no newline)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("WARNING")]
    line = lines[-1] if lines else "no output"
    return line.replace("|", "/")[:limit]


def run_worker(python: Path, args: list[str], log: Path, env: dict[str, str], timeout_s: float) -> str:
    """Run peer_worker.py in the peer's venv; '' on success, else the reason (one line)."""
    with log.open("w") as out:
        try:
            done = subprocess.run([str(python), str(WORKER), *args], stdout=out, stderr=subprocess.STDOUT,
                                  env=env, timeout=timeout_s, cwd=log.parent)  # peers drop logs/ in their cwd
        except subprocess.TimeoutExpired:
            return f"timed out after {timeout_s:.0f}s"
    return "" if done.returncode == 0 else last_line(log.read_text())
