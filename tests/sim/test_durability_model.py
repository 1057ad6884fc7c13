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


def test_metadata_store_is_the_floor_of_every_object() -> None:
    from storage.durability import combined_loss, metadata_estimate

    sqlite = metadata_estimate("sqlite", 1)
    etcd3, etcd5 = metadata_estimate("etcd", 3), metadata_estimate("etcd", 5)
    assert 0.03 < sqlite.loss_per_year < 0.05  # one disk's annual failure rate
    assert etcd5.loss_per_year < etcd3.loss_per_year < 1e-3 < sqlite.loss_per_year
    shards = estimate(DurabilityInputs(k=4, m=2, zones=3, nodes=9)).cluster_loss_per_year
    obj = combined_loss(shards, sqlite.loss_per_year)
    assert obj >= max(shards, sqlite.loss_per_year)
