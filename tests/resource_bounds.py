"""Resource bounds for tests that feed parsers hostile input: an address-space limit (so a
parser that trusts a size field fails with MemoryError instead of swapping) and a wall-clock
alarm (so a parser that loops fails instead of hanging the suite)."""

import contextlib
import resource
import signal

HEADROOM = 1 << 30
"""Address space allowed on top of what the test process already maps: 1 GiB."""


def _mapped_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        line = next(line for line in f if line.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


@contextlib.contextmanager
def resource_bounds(seconds: int, headroom: int = HEADROOM):
    """Run the body with at most ``headroom`` more bytes of address space and ``seconds`` of
    wall time (TimeoutError); both limits are lifted afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _mapped_bytes() + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)

    def alarm(signum, frame):
        raise TimeoutError(f"a parser ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, previous)
