"""raykd.data"""
