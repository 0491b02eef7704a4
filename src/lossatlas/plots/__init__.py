"""Figures. Plot functions only draw: they take arrays and return figures, never compute.

Static figures are matplotlib (saved as PNG bytes into the store); interactive ones are plotly
(saved as an HTML fragment without the plotly.js bundle, which the report inlines once).
"""

from lossatlas.plots._render import figure_to_png, plotly_to_html

__all__ = ["figure_to_png", "plotly_to_html"]
