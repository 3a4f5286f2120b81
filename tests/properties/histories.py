"""Strategies for random customer histories: a few identifiers of each kind (so chains of
links and conflicts happen), and event bodies of every kind the rulebooks read."""

from __future__ import annotations

from hypothesis import strategies as st

CUSTOMERS = ["c1", "c2"]
ANONYMOUS = ["a1", "a2", "a3"]
LOYALTY = ["l1"]

identities = st.one_of(
    st.builds(lambda c: {"customer_id": c}, st.sampled_from(CUSTOMERS)),
    st.builds(lambda a: {"anonymous_id": a}, st.sampled_from(ANONYMOUS)),
    st.builds(lambda card: {"loyalty_id": card}, st.sampled_from(LOYALTY)),
)
links = st.one_of(
    st.builds(lambda c, a: {"customer_id": c, "anonymous_id": a},
              st.sampled_from(CUSTOMERS), st.sampled_from(ANONYMOUS)),
    st.builds(lambda card, a: {"loyalty_id": card, "anonymous_id": a},
              st.sampled_from(LOYALTY), st.sampled_from(ANONYMOUS)),
    st.builds(lambda c, card: {"customer_id": c, "loyalty_id": card},
              st.sampled_from(CUSTOMERS), st.sampled_from(LOYALTY)),
)
bodies = st.one_of(
    st.just(("ping", {})),
    st.builds(lambda s: ("view", {"sku": s}), st.sampled_from(["sku-1", "sku-2"])),
    st.just(("app_opened", {})),
    st.just(("ping", {})),
    st.just(("app_opened", {})),
    st.just(("purchase", {})),
    st.builds(lambda zone: ("app_opened", {"time_zone": zone}),
              st.sampled_from(["Asia/Taipei", "America/New_York"])),
    st.builds(lambda g: ("consent_changed", {"channel": "email", "granted": g}), st.booleans()),
    st.builds(lambda a, r: ("action_response", {"action": a, "response": r}),
              st.sampled_from(["offer_a", "offer_b"]), st.sampled_from(["accepted", "declined"])),
)
