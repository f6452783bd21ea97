"""Helpers that one chapter needs and no other, one module per chapter (named after its paper).

A chapter imports its module as it imports the general layers; nothing in :mod:`clmini` below
this layer imports from here.
"""
