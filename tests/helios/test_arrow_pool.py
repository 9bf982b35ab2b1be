"""Arrow allocates through the C library's allocator in Helios processes, so freed Arrow memory can go back to the
OS (``helios.heap.trim_heap``); a user's own ARROW_DEFAULT_MEMORY_POOL wins."""
import os
import subprocess
import sys

CODE = ("import helios, pyarrow as pa, pyarrow.compute as pc; pc.sum(pa.array(range(10)));"
        "print(pa.default_memory_pool().backend_name)")


def pool_of(env: dict) -> str:
    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_helios_processes_allocate_arrow_memory_with_the_system_allocator():
    assert pool_of({"ARROW_DEFAULT_MEMORY_POOL": None}) == "system"


def test_a_users_own_arrow_pool_setting_wins():
    assert pool_of({"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}) == "jemalloc"
