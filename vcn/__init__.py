"""vcn: find, track and cluster every face in a video archive (VideoClusterNet on Ray)."""

__version__ = "0.1.0"
