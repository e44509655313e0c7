"""The analysts' report: contact-centre measures and customer outcomes from the raw tables.

Every figure is computed from the current raw data and carries the window it covers
(`first_ts`, `last_ts`: the first and last instant of the rows it used), so a reader can
tell a quiet month from a missing one. `page` turns the figures into one self-contained
HTML page.
"""
