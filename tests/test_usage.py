import pytest

from agentlab.usage import Price, PriceTable, Usage


def test_usage_adds_up():
    total = Usage(10, 5, 1) + Usage(1, 2, 1)
    assert (total.input_tokens, total.output_tokens, total.requests) == (11, 7, 2)
    assert total.total_tokens == 18


def test_default_prices_local_free_and_known_hosted():
    table = PriceTable()
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert table.cost("local:smollm2", usage) == 0.0
    assert table.cost("openai:gpt-4.1-mini", usage) == pytest.approx(0.40 + 1.60)


def test_unknown_model_has_unknown_cost_not_zero():
    assert PriceTable().cost("openai:my-finetune", Usage(100, 100)) is None


def test_user_prices_override_defaults():
    table = PriceTable({"openai:gpt-4.1-mini": Price(1.0, 2.0)})
    assert table.cost("openai:gpt-4.1-mini", Usage(1_000_000, 0)) == pytest.approx(1.0)
    table.set("openai:my-*", Price(3.0, 3.0))
    assert table.cost("openai:my-finetune", Usage(0, 1_000_000)) == pytest.approx(3.0)
    table.set("local:*", Price(0.5, 0.5))
    assert table.cost("local:smollm2", Usage(1_000_000, 0)) == pytest.approx(0.5)
