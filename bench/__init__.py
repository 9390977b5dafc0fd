"""The benchmark of the service against bare DCMTK tools and Orthanc."""
