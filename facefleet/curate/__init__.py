"""Curate: the learning loop from what cameras saw to a better, validated model.

``collect`` brings device events and unknown captures into the store as candidate faces,
``candidates`` filters, de-duplicates and ranks them, ``montage`` draws contact sheets for
review, ``clusters`` groups unknown captures so a person is labelled once, ``labels`` moves
faces through SentinelCam's statuses, ``validate`` compares a new version with production,
``autotrain`` runs the loop unattended and ``schedule`` installs it as a timer.
"""
