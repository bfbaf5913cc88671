"""Custom instructions and style rules: profiles with versions and undo, rule checkers, recognition of a
rule's checker from its wording, and feedback on replies."""
