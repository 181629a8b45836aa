"""Firestore access: one client factory, the emulator manager, repositories and the progress writer."""
