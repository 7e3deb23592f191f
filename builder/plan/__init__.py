"""The build plan of one image (stack x release x target x options) and the label keys it stamps on images; imports profile, lock's file format, smoke's check catalog, errors and safety only."""
