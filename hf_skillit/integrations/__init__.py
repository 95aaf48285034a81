"""Skill-It data selection inside other training libraries' trainers (each submodule needs its library's extra)."""
