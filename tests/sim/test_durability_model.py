"""The annual durability estimate behaves as the model says it should."""

from storage.durability import DurabilityInputs, estimate


def test_more_parity_and_faster_repair_are_more_durable() -> None:
    base = estimate(DurabilityInputs(k=4, m=2, zones=3, nodes=9, mttr_hours=24))
    more_parity = estimate(DurabilityInputs(k=4, m=3, zones=3, nodes=9, mttr_hours=24))
    faster = estimate(DurabilityInputs(k=4, m=2, zones=3, nodes=9, mttr_hours=2))
    assert more_parity.stripe_loss_per_year < base.stripe_loss_per_year
    assert faster.stripe_loss_per_year < base.stripe_loss_per_year
    assert 0 < base.cluster_loss_per_year < 1e-3
    assert 3 < base.nines < 8


def test_cluster_risk_grows_with_stripes_up_to_the_node_sets() -> None:
    one = estimate(DurabilityInputs(k=4, m=2, zones=3, nodes=9, stripes=1))
    many = estimate(DurabilityInputs(k=4, m=2, zones=3, nodes=9, stripes=10**6))
    more = estimate(DurabilityInputs(k=4, m=2, zones=3, nodes=9, stripes=10**9))
    assert one.cluster_loss_per_year < many.cluster_loss_per_year
    assert many.cluster_loss_per_year == more.cluster_loss_per_year  # bounded by node sets
    assert "assumptions" in many.to_dict()
