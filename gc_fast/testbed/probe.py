"""Time one message between two hosts: the proof that a test bed's ranks talk over its links.

    python -m gc_fast.testbed --hosts 2 -- python -m gc_fast.testbed.probe [BYTES]

Rank 0 sends BYTES (default 2 MB) to rank 1, which answers with one byte; rank 0 prints a JSON
line with the seconds, the rate in bits per second and each rank's host name. Over a link shaped
to R bit/s the rate is at most about R; shared memory between "hosts" would be far faster.
"""
import json
import socket
import sys
import time

import numpy as np


def main():
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    payload = np.ones(size, dtype=np.uint8)
    reply = np.zeros(1, dtype=np.uint8)
    names = comm.gather(socket.gethostname())
    for message in (payload[:1], payload):  # a small message first: connections are set up
        comm.Barrier()
        if comm.rank == 0:
            start = time.perf_counter()
            comm.Send(message, dest=1)
            comm.Recv(reply, source=1)
            seconds = time.perf_counter() - start
        elif comm.rank == 1:
            comm.Recv(message, source=0)
            comm.Send(reply, dest=0)
    if comm.rank == 0:
        print(json.dumps({"bytes": size, "seconds": seconds, "bits_per_second": 8 * size / seconds,
                          "hosts": names}))


if __name__ == "__main__":
    main()
