"""raykd.teachers"""
