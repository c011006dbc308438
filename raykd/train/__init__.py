"""raykd.train"""
