"""Widgets the screens share: the section bar, the connection banner, the forms built from
input schemas, and how statuses and times are shown."""
