"""raykd.tune"""
