"""Probes: the instruments both studies measure with. Each works on any nn.Module plus data."""
