"""One error line: whatever the message, one line of at most MAX_LINE characters that keeps its start (the
field and the value) and its end (the reason and the fix); a longer one loses its middle, shown as " ... ".
And counts as a person reads them."""

from hypothesis import given
from hypothesis import strategies as st

from powersweep.sweeps.outcome import CUT, MAX_LINE, counted, one_line


@given(st.text(min_size=0, max_size=3000))
def test_any_message_is_one_line_of_readable_length_that_keeps_both_ends(message):
    line = one_line(message)
    words = " ".join(message.split())
    assert "\n" not in line and len(line) <= MAX_LINE
    if len(words) <= MAX_LINE:
        assert line == words
    else:  # a third of the limit at least from each end, the middle shown as CUT
        third = MAX_LINE // 3
        assert line.startswith(words[:third]) and line.endswith(words[-third:]) and CUT in line


def test_a_long_value_in_the_middle_leaves_the_field_and_the_fix_whole():
    source = "/deep" * 100
    line = one_line(f"train.data.source='{source}': the corpus has 10 train tokens; use a larger corpus")
    assert line.startswith("train.data.source='/deep") and line.endswith("; use a larger corpus")


def test_an_unwritable_directory_is_named_once_so_the_reason_fits():
    from powersweep.sweeps.preflight import check_writable
    from powersweep.sweeps.store import StoreError

    deep = "/proc/" + "/".join(["a-rather-long-folder-name"] * 3)  # /proc takes no new file
    try:
        check_writable([deep])
    except StoreError as error:
        line = one_line(error)
    assert line.startswith(f"{deep}: cannot write in /proc, the nearest folder that exists, before")
    assert "[errno" in line and not line.endswith("...")


def test_counts_are_plural_unless_one():
    assert [counted(n, "lineage") for n in (0, 1, 2)] == ["0 lineages", "1 lineage", "2 lineages"]
