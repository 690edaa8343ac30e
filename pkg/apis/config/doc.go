// Package config holds the internal (unversioned) form of volume-agent's
// configuration API, group config.volumeagent.io. Programs work with these
// types; files are written in a versioned form (see v1alpha1) and converted.
//
// +k8s:deepcopy-gen=package
// +groupName=config.volumeagent.io
package config
