"""The canonical event schema: column names and reserved indices, defined once.

``*_id`` columns hold the user's external ids (always strings here), ``*_idx`` columns hold our dense
internal indices. Index 0 is padding everywhere (:data:`PAD_IDX`), so real users/items/behaviours start at 1.
"""

from __future__ import annotations

from typing import Final

# Canonical event columns (external ids).
USER_ID: Final = "user_id"
ITEM_ID: Final = "item_id"
TIMESTAMP: Final = "timestamp"
BEHAVIOR: Final = "behavior"
VALUE: Final = "value"
EVENT_COLUMNS: Final = (USER_ID, ITEM_ID, TIMESTAMP, BEHAVIOR, VALUE)

# Bookkeeping columns carried from reading to cleaning.
LINE: Final = "line"  # 1-based line number in the source file (row number for DataFrames)
REASON: Final = "reason"  # why a row was rejected or removed
RAW: Final = "raw"  # the offending raw text, when there is one

# Internal index columns of a prepared dataset.
USER_IDX: Final = "user_idx"
ITEM_IDX: Final = "item_idx"
BEHAVIOR_IDX: Final = "behavior_idx"
SPLIT: Final = "split"
COLD: Final = "cold"  # items-table column: True for items held out of training (cold-start protocol)
# items-table column: True for the held-out items whose validation events choose the new-item offset;
# cold-start test metrics are reported on the other held-out items only
COLD_FIT: Final = "cold_fit"

DEFAULT_BEHAVIOR: Final = "interact"
PAD_IDX: Final = 0

# Split codes stored per event in a prepared dataset.
TRAIN: Final = 0
VALID: Final = 1
TEST: Final = 2
SPLIT_NAMES: Final = ("train", "valid", "test")

# What a log's TIMESTAMP means (``report["clock"]`` of a prepared dataset): real times, or only the order of
# events (``sequences`` files: position ``p`` is stored as ``p * 1000`` ms). A report without it: timestamps.
CLOCK_TIMESTAMPS: Final = "timestamps"
CLOCK_POSITIONS: Final = "positions"
