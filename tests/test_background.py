import os
import threading

from studio_run.background import BACKGROUND_NICE, yield_to_script


def test_a_background_thread_lowers_only_its_own_priority():
    seen: dict[str, int] = {}

    def work() -> None:
        yield_to_script()
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen["thread"] == BACKGROUND_NICE or before > BACKGROUND_NICE  # already lower: left to the OS
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
