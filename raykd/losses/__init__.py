"""raykd.losses"""
