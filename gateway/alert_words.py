"""What an alert says, in English and in Japanese.

The engine describes what happened as a *wording*: a key of :data:`WORDS` and its
values. Each alert keeps the English text (``message``, as the API has always given
it) and the Japanese one (``message_ja``), so the operator pages and the notifications
speak the reader's language without the gateway knowing who reads them::

    wording = ("above", {"metric": "depth_cm", "value": 31, "level": 30})
    say(wording, "en")                     # 'depth_cm 31 ≥ 30'
    say(held(wording, 10), "ja")           # 'depth_cm が 31（30 以上）の状態が 10 分続いています'

To change a sentence, change it here, in both languages; ``tests/test_alerts.py``
checks that every key has both.
"""

from __future__ import annotations

from typing import Any

Wording = tuple[str, dict[str, Any]]

LANGUAGES = ("en", "ja")

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "above": "{metric} {value} ≥ {level}",
        "below": "{metric} {value} ≤ {level}",
        "back_below": "{metric} {value} is back below {level}",
        "back_above": "{metric} {value} is back above {level}",
        "held": "{what} for {min} min",
        "no_data": "no readings for {min} min (the last at {last})",
        "no_data_ever": "no readings for {min} min (none since the gateway started)",
        "data_again": "readings arrive again",
        "not_moved": "has stayed within {radius} m for {min} min",
        "moving_again": "moving again ({moved} m)",
        "entered": "entered the area",
        "left": "left the area",
        "event": "the device sent {event}",
        "event_with": "the device sent {event}: {details}",
        "event_quiet": "no {event} for {min} min",
        "acknowledged_by": "acknowledged by {user}",
        "device_removed": "the device was removed",
        "rule_disabled": "the rule was disabled",
        "rule_elsewhere": "the rule no longer covers this device",
        "rule_deleted": "the rule was deleted",
        # notifications
        "state.raised": "RAISED",
        "state.acknowledged": "ACKNOWLEDGED",
        "state.cleared": "CLEARED",
        "when": "{state} at {time}",
        "because": "raised at {time}, because {what}",
    },
    "ja": {
        "above": "{metric} が {value}（{level} 以上）",
        "below": "{metric} が {value}（{level} 以下）",
        "back_below": "{metric} が {value} に下がりました（{level} 未満）",
        "back_above": "{metric} が {value} に戻りました（{level} より上）",
        "held": "{what}の状態が {min} 分続いています",
        "no_data": "{min} 分間データが届いていません（最後は {last}）",
        "no_data_ever": "{min} 分間データが届いていません（ゲートウェイの起動以来なし）",
        "data_again": "データが再び届きました",
        "not_moved": "{min} 分間、半径 {radius} m の中から動いていません",
        "moving_again": "再び動き出しました（{moved} m）",
        "entered": "区域に入りました",
        "left": "区域を出ました",
        "event": "機器から {event} が届きました",
        "event_with": "機器から {event} が届きました（{details}）",
        "event_quiet": "{min} 分間 {event} が届いていません",
        "acknowledged_by": "{user} さんが確認しました",
        "device_removed": "デバイスが削除されました",
        "rule_disabled": "ルールが無効にされました",
        "rule_elsewhere": "ルールがこのデバイスを対象にしなくなりました",
        "rule_deleted": "ルールが削除されました",
        "state.raised": "発生",
        "state.acknowledged": "確認済み",
        "state.cleared": "解除",
        "when": "{state}：{time}",
        "because": "発生：{time}（{what}）",
    },
}


def held(wording: Wording, minutes: float) -> Wording:
    """The same, having lasted ``minutes``."""
    return ("held", {"what": wording, "min": round(minutes)})


def say(wording: Wording | str, lang: str) -> str:
    """The wording as a sentence in ``lang``; a plain string is said as it is."""
    if isinstance(wording, str):
        return wording
    key, values = wording
    shown = {name: _shown(value, lang) for name, value in values.items()}
    return WORDS[lang][key].format(**shown)


def _shown(value: Any, lang: str) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str):
        return say((value[0], value[1]), lang)  # a wording inside a wording (as JSON it is a list)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
