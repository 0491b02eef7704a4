"""The two studies (Fort & Jastrzebski 2019; Horoi et al. 2022) and their claims."""

from lossatlas.studies.claims import Claim, load_claims, save_claims, write_summary

__all__ = ["Claim", "load_claims", "save_claims", "write_summary"]
