"""Right of access (service/tools/access.py): `touchflow profile show|export` reads one customer's
profile from a stopped worker's RocksDB store, follows an alias's redirect to the profile it
was merged into, prints everything held (readable or JSON), and fails in one sentence."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from service.cli import main
from service.domain.partitioning import partition_for_key
from service.domain.profile import Profile, event_digest
from service.ops.settings import Settings, load_settings
from service.stream.store import RocksStore
from service.tools.access import AccessError, export, read_holdings, render

AT = 1_772_411_400_000  # 2026-03-02T00:30:00Z


def _customer() -> Profile:
    profile = Profile.new("customer_id:c-42")
    profile.newest_ms, profile.tz_min = AT, 540
    profile.remember(event_digest("e-1"), AT - 60_000, 64)
    profile.remember(event_digest("e-2"), AT, 64)
    profile.scores, profile.sref_ms = {"engagement": 12.5}, AT
    profile.hits = {"engagement/visit": 3}
    profile.traits = {"tier": "gold"}
    profile.consent = {"channel:sms": [True, AT - 1000], "purpose:marketing": [False, AT]}
    profile.sent = {"tablet_offer": [AT, 2]}
    profile.recent = [[AT, "tablet_offer", "act-1"]]
    profile.responses = {"tablet_offer": {"shown": 1}}
    profile.windows = {"browse_then_buy": [[AT, "tv"]]}
    profile.links = ["anonymous_id:a-9"]
    return profile


def _settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path, partitions=4, broker="kafka://127.0.0.1:1")


def _store(settings: Settings, *profiles: Profile) -> None:
    for profile in profiles:
        key = profile.key.encode()
        partition = partition_for_key(key, settings.partitions)
        store = RocksStore(settings.data_dir / settings.app_id / "profiles" / f"p{partition:04d}")
        store.write({key: profile.to_bytes()}, 0)
        store.close()


def test_export_holds_every_part_of_the_profile_with_readable_times(tmp_path: Path) -> None:
    """Scores, rule hits, traits, consent, sent history, recent actions, responses, windows,
    linked identifiers and the event-id memory are all exported, times in ISO-8601 UTC."""
    settings = _settings(tmp_path)
    _store(settings, _customer())
    chain = read_holdings(settings, "customer_id:c-42", from_changelog=False)
    document = export("customer_id:c-42", chain)
    partition = partition_for_key(b"customer_id:c-42", 4)
    assert document["held"] is True and document["redirects"] == []
    assert document["partition"] == partition
    assert document["source"].endswith(f"p{partition:04d}")
    profile = document["profile"]
    assert profile["customer_id"] == "c-42"
    assert profile["linked_identifiers"] == ["anonymous_id:a-9"]
    assert profile["newest_event_at"] == "2026-03-02T00:30:00.000Z"
    assert profile["utc_offset_minutes"] == 540 and profile["events_remembered"] == 2
    assert profile["scores"] == {"engagement": 12.5}
    assert profile["score_rule_hits"] == {"engagement/visit": 3}
    assert profile["traits"] == {"tier": "gold"}
    assert profile["consent"] == {
        "channel:sms": {"granted": True, "at": "2026-03-02T00:29:59.000Z"},
        "purpose:marketing": {"granted": False, "at": "2026-03-02T00:30:00.000Z"}}
    assert profile["sent"] == {"tablet_offer": {"last_sent_at": "2026-03-02T00:30:00.000Z",
                                                "times": 2}}
    assert profile["recent_actions"] == [{"at": "2026-03-02T00:30:00.000Z",
                                          "action": "tablet_offer", "action_id": "act-1"}]
    assert profile["responses"] == {"tablet_offer": {"shown": 1}}
    assert profile["windows"] == {"browse_then_buy": [["2026-03-02T00:30:00.000Z", "tv"]]}
    orjson.dumps(document)


def test_an_alias_shows_its_redirect_then_the_profile_it_was_merged_into(
        tmp_path: Path) -> None:
    """Asking for the anonymous id of a merged profile names the redirect and prints the
    customer's profile (possibly in another partition)."""
    settings = _settings(tmp_path)
    alias = Profile.new("anonymous_id:a-9")
    alias.redirect = "customer_id:c-42"
    _store(settings, _customer(), alias)
    chain = read_holdings(settings, "anonymous_id:a-9", from_changelog=False)
    assert [h.key for h in chain] == ["anonymous_id:a-9", "customer_id:c-42"]
    text = render("anonymous_id:a-9", chain)
    assert text.splitlines()[0].startswith(
        "anonymous_id:a-9 is an alias merged into customer_id:c-42 (store ")
    assert "profile customer_id:c-42 (store " in text
    for line in ("    engagement: 12.5", "    tier: gold", "  events_remembered: 2",
                 '    - {"at":"2026-03-02T00:30:00.000Z","action":"tablet_offer",'
                 '"action_id":"act-1"}'):
        assert line in text.splitlines(), line
    document = export("anonymous_id:a-9", chain)
    assert document["redirects"][0]["key"] == "anonymous_id:a-9"
    assert document["profile"]["key"] == "customer_id:c-42"


def test_a_key_without_a_profile_says_no_profile_held(tmp_path: Path) -> None:
    """A key the store does not hold is answered "no profile held" (export: held false)."""
    settings = _settings(tmp_path)
    _store(settings, _customer())
    chain = read_holdings(settings, "customer_id:c-404", from_changelog=False)
    assert render("customer_id:c-404", chain).startswith("no profile held for customer_id:c-404")
    assert export("customer_id:c-404", chain)["held"] is False


def test_an_erased_key_says_when_it_was_erased(tmp_path: Path) -> None:
    """A key whose profile was erased holds only its tombstone (no identifier): the answer
    is "no profile held ...; erased at T", and export's `erased_at`."""
    from service.domain.erasure import key_digest
    from service.stream.store import tombstone_key

    settings = _settings(tmp_path)
    partition = partition_for_key(b"customer_id:c-gone", 4)
    store = RocksStore(settings.data_dir / settings.app_id / "profiles" / f"p{partition:04d}")
    store.write({tombstone_key(key_digest("customer_id:c-gone")): str(AT).encode()}, 0)
    store.close()
    chain = read_holdings(settings, "customer_id:c-gone", from_changelog=False)
    assert render("customer_id:c-gone", chain).endswith("; erased at 2026-03-02T00:30:00.000Z.")
    assert export("customer_id:c-gone", chain)["erased_at"] == "2026-03-02T00:30:00.000Z"


def test_a_store_in_use_by_a_running_worker_is_refused_in_one_sentence(tmp_path: Path) -> None:
    """While a worker holds the partition's RocksDB open (its lock), the command refuses and
    says to stop it or read the changelog."""
    settings = _settings(tmp_path)
    _store(settings, _customer())
    partition = partition_for_key(b"customer_id:c-42", 4)
    running = RocksStore(settings.data_dir / settings.app_id / "profiles" / f"p{partition:04d}")
    try:
        with pytest.raises(AccessError, match="locked by a running worker; stop it first, or "
                                              "read the changelog topic with --from-changelog"):
            read_holdings(settings, "customer_id:c-42", from_changelog=False)
    finally:
        running.close()


def test_cli_show_export_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`touchflow profile show --customer-id c-42` prints the profile (exit 0); `export`
    prints JSON; an unknown key exits 1 with "no profile held"; a bad key, two keys, or a
    missing store directory end in one sentence on stderr (exit 2) without a traceback."""
    monkeypatch.setenv("TOUCHFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TOUCHFLOW_PARTITIONS", "4")
    _store(_settings(tmp_path), _customer())
    assert main(["profile", "show", "--customer-id", "c-42"]) == 0
    assert "profile customer_id:c-42" in capsys.readouterr().out
    assert main(["profile", "export", "customer_id:c-42"]) == 0
    assert orjson.loads(capsys.readouterr().out)["profile"]["traits"] == {"tier": "gold"}
    assert main(["profile", "show", "customer_id:c-404"]) == 1
    assert "no profile held for customer_id:c-404" in capsys.readouterr().out
    for argv, sentence in (
            (["nickname:x"], "the key must be <field>:<value>"),
            (["customer_id:c-1", "--loyalty-id", "l-1"], "give exactly one profile key"),
            (["customer_id:c-1", "--data-dir", str(tmp_path / "none")],
             "there is no profile store at")):
        assert main(["profile", "show", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"touchflow profile: {sentence}") and err.count("\n") == 1
        assert "Traceback" not in err
