"""The Rete rule engine: network, agenda and conflict strategies, truth maintenance, DSL.

Import the pieces from their modules (``rules.engine.Engine``, ``rules.dsl.load_ruleset``,
``rules.builder.RuleBook``, ``rules.policy.AdmissionPolicy``); this package imports nothing.
"""

__all__: list[str] = []
