"""Figures and reports built from atlases (MIS plots: ``unitlens.report.mis_plots``)."""
