"""The dashboard's labels in English and Japanese, and which one a browser asks for.

The language is the browser's first choice among ``ja`` and ``en`` in ``Accept-Language``
(RFC 9110 §12.5.4: quality values, ``*``), unless the operator picked one (a ``lang`` cookie).
"""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("en", "ja")
DEFAULT_LANGUAGE = "en"

# key -> (English, Japanese)
LABELS: dict[str, tuple[str, str]] = {
    "app_title": ("operator console", "運用コンソール"),
    "fleet": ("Fleet", "フリート"),
    "events": ("Events", "DRイベント"),
    "gateways": ("Gateways", "ゲートウェイ"),
    "security": ("Security", "セキュリティ"),
    "products": ("Products", "商品"),
    "settlement": ("Settlement", "精算"),
    "operators": ("Operators", "オペレーター"),
    "login": ("Log in", "ログイン"),
    "logout": ("Log out", "ログアウト"),
    "operator_name": ("Operator", "オペレーター名"),
    "password": ("Password", "パスワード"),
    "change_password": ("Change password", "パスワード変更"),
    "current_password": ("Current password", "現在のパスワード"),
    "new_password": ("New password (12 characters or more)", "新しいパスワード (12文字以上)"),
    "new_password_again": ("New password, again", "新しいパスワード (確認)"),
    "must_change_password": ("This password was set for you: choose your own before you go on.",
                             "このパスワードは仮のものです。続ける前にご自身のパスワードを設定してください。"),
    "passwords_differ": ("the two new passwords differ", "新しいパスワードが一致しません"),
    "password_changed": ("Password changed.", "パスワードを変更しました。"),
    "sites": ("Sites", "サイト"),
    "site": ("Site", "サイト"),
    "sites_online": ("Sites online", "オンラインのサイト"),
    "resources_online": ("Resources online", "オンラインのリソース"),
    "kw_now": ("kW now", "現在の電力 (kW)"),
    "soc": ("Battery SOC", "蓄電池 SOC"),
    "flex_down": ("Flexibility down", "下げ余力"),
    "flex_up": ("Flexibility up", "上げ余力"),
    "fleet_power": ("Fleet power (kW)", "フリート電力 (kW)"),
    "filter": ("Filter", "絞り込み"),
    "kind": ("Kind", "種別"),
    "status": ("Status", "状態"),
    "online": ("online", "オンライン"),
    "offline": ("offline", "オフライン"),
    "resources": ("Resources", "リソース"),
    "last_seen": ("Last seen", "最終受信"),
    "grid": ("Sites at a glance", "サイト一覧図"),
    "table": ("Sites", "サイト表"),
    "devices": ("Devices", "機器"),
    "device": ("Device", "機器"),
    "device_class": ("Class", "クラス"),
    "power_kw": ("Power (kW)", "電力 (kW)"),
    "setpoint": ("Setpoint (°C)", "設定温度 (°C)"),
    "room_temp": ("Room (°C)", "室温 (°C)"),
    "rated_kw": ("Rated (kW)", "定格 (kW)"),
    "meter_history": ("Meter, 30-minute history", "スマートメーター 30分値"),
    "power_history": ("Power history", "電力の推移"),
    "not_available": ("not available", "利用できません"),
    "create_event": ("Create an event", "イベントを作成"),
    "target_kw": ("Target (kW, negative reduces demand)", "目標 (kW, 負は下げDR)"),
    "start": ("Start", "開始"),
    "end": ("End", "終了"),
    "duration_minutes": ("Duration (minutes)", "継続時間 (分)"),
    "product": ("Product", "商品"),
    "create": ("Create", "作成"),
    "cancel": ("Cancel", "取消"),
    "cancel_event": ("Cancel this event", "このイベントを取り消す"),
    "stage": ("Stage", "段階"),
    "event": ("Event", "イベント"),
    "timeline": ("Timeline", "タイムライン"),
    "target": ("Target", "目標"),
    "delivered": ("Delivered", "実績"),
    "baseline": ("Baseline", "ベースライン"),
    "actual": ("Fleet power", "フリート電力"),
    "slot": ("Slot", "コマ"),
    "slots": ("Per 30-minute slot", "30分コマ別"),
    "ratio": ("Delivered / target", "達成率"),
    "acknowledgements": ("Acknowledgements", "応答"),
    "refusals": ("Refusals", "拒否"),
    "reason": ("Reason", "理由"),
    "commands": ("Commands", "指令"),
    "history": ("History", "履歴"),
    "actor": ("By", "実行者"),
    "at": ("At", "時刻"),
    "shortfall": ("Shortfall (kW)", "不足 (kW)"),
    "warnings": ("Warnings", "警告"),
    "certificate_expiry": ("Certificate expires", "証明書の有効期限"),
    "outbox_depth": ("Outbox depth", "未送信キュー"),
    "revoke": ("Revoke", "失効"),
    "assessment": ("Guideline self-assessment", "ガイドライン自己評価"),
    "audit_tail": ("Audit log, newest records", "監査ログ (最新)"),
    "audit_verify": ("Verify the audit chain", "監査ログの検証"),
    "verify": ("Verify", "検証"),
    "requirement": ("Requirement", "要求事項"),
    "control": ("Control", "対策"),
    "evidence": ("Evidence", "根拠"),
    "role": ("Role", "ロール"),
    "add_operator": ("Add an operator", "オペレーターを追加"),
    "add": ("Add", "追加"),
    "disable": ("Disable", "無効化"),
    "disabled": ("disabled", "無効"),
    "download_csv": ("Download CSV", "CSV をダウンロード"),
    "refused": ("Refused", "拒否されました"),
    "forbidden": ("Not allowed", "権限がありません"),
    "not_found": ("Not found", "見つかりません"),
    "updated": ("Updated", "更新"),
    "none_yet": ("none yet", "まだありません"),
    "reference_note": (
        "Baseline: the fleet's level just before dispatch (the settlement's baseline where "
        "available)",
        "ベースライン: 指令直前のフリート電力 (精算のベースラインがあればそれを使用)",
    ),
    "alerts": ("Open alerts", "未解決のアラート"),
    "no_alerts": ("none open", "ありません"),
    "received": ("received", "受付"),
    "planned": ("planned", "計画済"),
    "dispatched": ("dispatched", "指令済"),
    "active": ("active", "実行中"),
    "completed": ("completed", "完了"),
    "cancelled": ("cancelled", "取消"),
    "acknowledged": ("acknowledged", "応答済"),
    "expired": ("expired", "期限切れ"),
    "enrolled": ("enrolled", "登録済"),
    "revoked": ("revoked", "失効"),
    "language": ("日本語", "English"),
    "signed_in_as": ("Signed in as", "ログイン中"),
}


# labels the page's script needs (passed as a JSON block)
SCRIPT_LABELS = (
    "no_alerts", "actual", "baseline", "target", "none_yet", "online", "offline", "received",
    "planned", "dispatched", "active", "completed", "cancelled", "acknowledged", "refused",
    "expired", "enrolled", "revoked",
)


def pick_language(accept_language: str | None, chosen: str | None = None) -> str:
    """``chosen`` (the ``lang`` cookie) if it is a language we have; otherwise the language of
    ``Accept-Language`` with the highest quality among ours; otherwise English."""
    if chosen in LANGUAGES:
        return str(chosen)
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for position, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary == "*":
            primary = DEFAULT_LANGUAGE
        # an earlier item wins a tie (the order the browser lists them in)
        if primary in LANGUAGES and q > best_q and not (q == best_q and position):
            best, best_q = primary, q
    return best


def translator(language: str) -> Callable[[str], str]:
    """``t(key)``: the label of ``key`` in ``language``; the key itself if it has none (so a
    missing label shows up in the page rather than failing it)."""
    index = 1 if language == "ja" else 0

    def t(key: str) -> str:
        pair = LABELS.get(key)
        return key if pair is None else pair[index]

    return t
