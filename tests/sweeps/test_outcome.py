"""One error line: whatever the message, one line of at most MAX_LINE characters that keeps its start (the
field and value) and its end (the reason and the fix)."""

from hypothesis import given
from hypothesis import strategies as st

from powersweep.sweeps.outcome import MAX_LINE, one_line


@given(st.text(min_size=0, max_size=3000))
def test_any_message_is_one_line_of_readable_length(message):
    line = one_line(message)
    assert "\n" not in line and len(line) <= MAX_LINE
    words = " ".join(message.split())
    assert line == words if len(words) <= MAX_LINE else " ... " in line


def test_a_long_line_keeps_its_start_and_its_end():
    path = "/tmp/" + "x" * 400
    line = one_line(
        f"{path}: cannot write before the sweep starts: PermissionError [errno 1]: make it writable"
    )
    assert line.startswith("/tmp/xxx") and line.endswith("PermissionError [errno 1]: make it writable")
    assert len(line) == MAX_LINE
