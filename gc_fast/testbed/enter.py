"""The launcher wrapper: enter an emulated host (its cgroups, then its namespace), run a command.

MPI's launcher calls it where it would call ssh: ``enter STATE [ssh options] HOST COMMAND...``.
It joins the host's cgroups first (``ip netns exec`` would hide /sys/fs/cgroup), then its network
namespace, takes the host's name in a UTS namespace of its own, and runs COMMAND through
``sh -c`` as sshd would. It runs as a plain script (``python enter.py``), importing nothing of
gc_fast, so that entering a host costs no package import.
"""
import ctypes
import json
import os
import socket
import sys

CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
SSH_OPTIONS_WITH_VALUE = set("bcDEeFIiJLlmOoPpQRSWw")


def split_ssh_arguments(arguments):
    """(host, command) from ssh-style arguments: options first, then the host, then the command."""
    index = 0
    while index < len(arguments) and arguments[index].startswith("-"):
        option = arguments[index]
        index += 2 if len(option) == 2 and option[1] in SSH_OPTIONS_WITH_VALUE else 1
    if index >= len(arguments) - 1:
        raise ValueError(f"expected [options] HOST COMMAND, got {arguments!r}")
    return arguments[index], " ".join(arguments[index + 1:])


def _libc_call(name, *arguments):
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*arguments) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{name}: {os.strerror(error)}")


def join(procs_files, pid):
    """Put `pid` into the cgroups whose procs files are given."""
    for path in procs_files:
        with open(path, "w") as procs:
            procs.write(str(pid))


def enter(host):
    """Move this process into emulated host `host` (a dict from the test bed's state file)."""
    join(host["procs_files"], os.getpid())
    with open(host["netns_path"]) as namespace:
        _libc_call("setns", namespace.fileno(), CLONE_NEWNET)
    _libc_call("unshare", CLONE_NEWUTS)
    socket.sethostname(host["name"])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        state = json.loads(open(argv[0]).read())
        address, command = split_ssh_arguments(argv[1:])
        host = state["hosts"][address]
    except (IndexError, ValueError, KeyError, OSError) as error:
        print(f"gc_fast.testbed.enter: {error}: run jobs through python -m gc_fast.testbed",
              file=sys.stderr)
        return 255
    try:
        enter(host)
    except OSError as error:
        print(f"gc_fast.testbed.enter: cannot enter host {address}: {error}", file=sys.stderr)
        return 255
    os.execv("/bin/sh", ["sh", "-c", command])


if __name__ == "__main__":
    sys.exit(main())
